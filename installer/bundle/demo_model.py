"""The demo model: a tiny Gemma 4 and its MTP assistant, trained at bundle-build time.

`demo_trainer.py` trains them in a venv made from a wheelhouse that holds torch and transformers
(the spec's `trainer` requirements: the demo engine's own, so the model is trained with the same
Gemma 4 code the engine serves it with). The result is cached under
`<cache>/demo-models/<recipe digest>/` (see `cache_root`): the digest covers the trainer script,
the chat template, the corpus, the seed, the step count and the exact torch and transformers
wheels, so a second build, any test and `make demo` reuse it.

Reproducibility: one thread, deterministic kernels, a fixed seed, and every float kernel held to
one code path whatever the x86-64 CPU: ATen to AVX2, MKL to its COMPATIBLE branch of conditional
numerical reproducibility, oneDNN off. MKL's AVX2 branch, used before, exists on Intel CPUs only:
on an AMD EPYC machine MKL reported `CNR:AUTO` (MKL_VERBOSE) and trained a different model. The
spec pins the digest of the files (`digest`) and a build that produces anything else fails,
naming the cause.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from installer.bundle.wheelhouse import cache_root, fetch_wheelhouse, wheel_identity

TRAINER = Path(__file__).with_name("demo_trainer.py")
CHAT_TEMPLATE = Path(__file__).with_name("gemma4_chat_template.jinja")
SEED = 20261126
STEPS = 1600
# What the trainer venv installs from the wheelhouse (pip resolves their dependencies there).
TRAINER_PROJECTS = ("torch", "transformers", "tokenizers", "safetensors")
# Same float results on any x86-64 CPU with AVX2, Intel or AMD: ATen's kernels are held to AVX2,
# MKL to its COMPATIBLE branch (its AVX2 branch exists on Intel CPUs only: elsewhere MKL falls back
# to its own dispatch, which made the model differ on AMD EPYC), oneDNN to AVX2 (and the trainer
# switches it off); one thread, so no reduction is split differently.
REPRODUCIBLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}
COMPLETE = ".complete.json"
TIMEOUT_SECONDS = 1800


class DemoModelError(RuntimeError):
    """The demo model could not be made, or is not what the spec pinned."""


@dataclass(frozen=True)
class DemoModels:
    model: Path  # the cached Gemma 4 checkpoint
    assistant: Path  # the cached MTP assistant checkpoint
    recipe: dict[str, Any]  # how they were made, for the manifest


def tree_digest(directory: Path) -> str:
    """SHA-256 of `sha256sum`-style lines (digest, two spaces, path), sorted by path."""
    lines = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(directory).as_posix()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _trainer_wheels(wheelhouse: Path) -> dict[str, str]:
    """Versions of the trainer's projects in the wheelhouse (it must hold each of them)."""
    found = {}
    for wheel in wheelhouse.glob("*.whl"):
        name, version = wheel_identity(wheel.name)
        if name in TRAINER_PROJECTS:
            found[name] = version
    missing = sorted(set(TRAINER_PROJECTS) - set(found))
    if missing:
        raise DemoModelError(f"the trainer wheelhouse {wheelhouse} has no {', '.join(missing)}")
    return dict(sorted(found.items()))


def recipe_digest(corpus: Path, versions: dict[str, str], steps: int) -> str:
    payload = hashlib.sha256()
    for part in (TRAINER.read_bytes(), CHAT_TEMPLATE.read_bytes(), corpus.read_bytes()):
        payload.update(hashlib.sha256(part).digest())
    settings = {"seed": SEED, "steps": steps, "env": REPRODUCIBLE_ENV, "versions": versions}
    payload.update(json.dumps(settings, sort_keys=True).encode())
    return payload.hexdigest()


def _trainer_python(wheelhouse: Path, versions: dict[str, str]) -> Path:
    """A venv with the wheelhouse's torch and transformers, made once and kept in the cache."""
    key = hashlib.sha256(json.dumps([str(wheelhouse), versions]).encode()).hexdigest()[:16]
    venv = cache_root() / "trainers" / key
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / COMPLETE).is_file():
            _make_trainer_venv(venv, wheelhouse, versions)
    return python


def _make_trainer_venv(venv: Path, wheelhouse: Path, versions: dict[str, str]) -> None:
    python = venv / "bin" / "python"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    pins = [f"{name}=={version}" for name, version in versions.items()]
    install = [str(python), "-m", "pip", "install", "--isolated", "--no-index", "--quiet"]
    install += ["--disable-pip-version-check", "--find-links", str(wheelhouse), *pins]
    done = subprocess.run(install, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
        raise DemoModelError(f"cannot make the trainer venv from {wheelhouse}:\n{tail}")
    (venv / COMPLETE).write_text(json.dumps({"versions": versions}) + "\n", encoding="utf-8")


def train_demo_models(
    out: Path, corpus: Path, python: Path, steps: int, log: Callable[[str], None]
) -> None:
    """Run the trainer into `out` (model/ and assistant/); raise with its output on failure."""
    request = {
        "out": str(out),
        "corpus": str(corpus),
        "chat_template": str(CHAT_TEMPLATE),
        "seed": SEED,
        "steps": steps,
    }
    request_file = out / "request.json"
    out.mkdir(parents=True, exist_ok=True)
    request_file.write_text(json.dumps(request), encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(out), **REPRODUCIBLE_ENV}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(out / ".hf")}
    started = time.monotonic()
    done = subprocess.run(
        [str(python), "-I", str(TRAINER), str(request_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise DemoModelError(f"training the demo model failed (exit {done.returncode}):\n{tail}")
    branches = set(re.findall(r"CNR:(\w+)", done.stdout))
    if branches != {"COMPATIBLE"}:
        raise DemoModelError(
            f"the trainer's MKL ran the branches {sorted(branches) or 'none (no MKL)'}, not "
            "COMPATIBLE: its float results would follow this CPU, so the model is not kept"
        )
    request_file.unlink()
    shutil.rmtree(out / ".hf", ignore_errors=True)
    log(f"trained the demo model in {time.monotonic() - started:.0f} s")


def demo_models(
    corpus: Path,
    trainer_requirements: list[str],
    *,
    steps: int = STEPS,
    log: Callable[[str], None] = lambda _: None,
) -> DemoModels:
    """The trained demo model and assistant for this recipe, from the cache or trained now."""
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheelhouse = fetch_wheelhouse(trainer_requirements, platform_tags=[], python=python_version)
    versions = _trainer_wheels(wheelhouse)
    digest = recipe_digest(corpus, versions, steps)
    target = cache_root() / "demo-models" / digest[:24]
    target.parent.mkdir(parents=True, exist_ok=True)
    # One training per recipe even when several builds (or test workers) ask at once.
    with (target.parent / f"{digest[:24]}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / COMPLETE).is_file():
            log(f"training the demo model (torch {versions['torch']}, {steps} steps, one CPU)")
            partial = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
            try:
                python = _trainer_python(wheelhouse, versions)
                train_demo_models(partial, corpus, python, steps, log)
                marker = {"recipe_sha256": digest, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
                (partial / COMPLETE).write_text(json.dumps(marker) + "\n", encoding="utf-8")
                shutil.rmtree(target, ignore_errors=True)
                partial.rename(target)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    training = json.loads((target / "training.json").read_text(encoding="utf-8"))
    recipe = {
        "generator": "installer/bundle/demo_trainer.py",
        "recipe_sha256": digest,
        "seed": SEED,
        "steps": steps,
        "examples": training["examples"],
        "final_loss": training["final_loss"],
        "trainer": versions,
        "threads": 1,
        "cpu_isa": "ATen AVX2, MKL CNR COMPATIBLE, oneDNN off",
    }
    return DemoModels(target / "model", target / "assistant", recipe)


def copy_checked(source: Path, dest: Path, pinned: str | None, what: str) -> str:
    """Copy a generated checkpoint into the bundle; refuse it when it differs from the pin."""
    digest = tree_digest(source)
    if pinned is not None and digest != pinned:
        raise DemoModelError(
            f"{what}: the generated files have digest {digest}, the spec pins {pinned}. "
            "Either the recipe changed (trainer, chat template, corpus, seed, steps, torch or "
            "transformers version: put the new digest in the spec) or this CPU computes "
            "differently despite the pinned code paths (offline-bundle/README.md, "
            '"Reproducibility and the pin", names them).'
        )
    shutil.copytree(source, dest, dirs_exist_ok=True)
    return digest
