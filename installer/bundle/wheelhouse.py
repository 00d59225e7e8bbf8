"""Wheelhouses for the target platform, resolved with pip and cached between builds.

`pip download --only-binary=:all:` (with `--platform`/`--python-version` when the target is not
this machine) resolves pinned requirements; the result is kept under
`~/.cache/sparkplane/wheels/<key>/` (or `$SPARKPLANE_CACHE_DIR/wheels/`), keyed by the
requirements and the target, so that rebuilds and test runs do not download again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

COMPLETE_MARKER = ".complete.json"


class WheelhouseError(RuntimeError):
    """pip could not resolve or download the wheelhouse."""


def cache_root() -> Path:
    configured = os.environ.get("SPARKPLANE_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "sparkplane"


def requirement_lines(text: str) -> list[str]:
    """Requirement lines without comments and blanks, in their order."""
    lines = []
    for raw in text.replace("\\\n", " ").splitlines():  # join backslash continuations
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def wheelhouse_key(requirements: list[str], platform_tags: list[str], python: str | None) -> str:
    """Cache key: a readable prefix plus a digest of everything that changes the resolution."""
    target = platform_tags or [f"native-{sysconfig.get_platform()}"]
    python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    payload = json.dumps({"req": requirements, "platform": target, "python": python})
    first = re.sub(r"[^A-Za-z0-9.]+", "-", requirements[0] if requirements else "empty")[:40]
    return f"{first}-py{python}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def fetch_wheelhouse(
    requirements: list[str], *, platform_tags: list[str], python: str | None
) -> Path:
    """Return a cached directory of wheels for `requirements`, downloading it if needed."""
    target = cache_root() / "wheels" / wheelhouse_key(requirements, platform_tags, python)
    if (target / COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    try:
        req_file = staging / "requirements.txt"
        req_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:"]
        command += ["--dest", str(staging), "-r", str(req_file), "--progress-bar", "off"]
        for tag in platform_tags:
            command += ["--platform", tag]
        if python:
            command += ["--python-version", python]
        _run_pip(command, "pip download")
        req_file.unlink()
        marker = {"requirements": requirements, "platform_tags": platform_tags, "python": python}
        marker["downloaded"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (staging / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        try:
            staging.rename(target)
        except OSError:
            # Another build filled the same cache entry meanwhile: use theirs, drop ours.
            if not (target / COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_project_wheel(project_dir: Path, out_dir: Path) -> Path:
    """`pip wheel --no-deps` of a project, from a clean copy so stale build/ files cannot leak."""
    with tempfile.TemporaryDirectory(prefix="sparkplane-wheel-") as tmp:
        source = Path(tmp) / "src"
        _copy_project_sources(project_dir, source)
        wheels = Path(tmp) / "wheels"
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels)]
        _run_pip([*command, "--progress-bar", "off", str(source)], "pip wheel")
        built = sorted(wheels.glob("*.whl"))
        if len(built) != 1:
            raise WheelhouseError(f"pip wheel of {project_dir} produced {len(built)} wheels")
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(built[0], out_dir / built[0].name))


def _copy_project_sources(project_dir: Path, dest: Path) -> None:
    """Only what the wheel is built from: pyproject, readme/licence, the declared packages.

    Copying the whole work tree would drag in virtual environments and demo roots.
    """
    pyproject = project_dir / "pyproject.toml"
    try:
        config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise WheelhouseError(f"cannot read {pyproject}: {exc}") from exc
    find = config.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {})
    roots = sorted({pattern.split(".")[0].rstrip("*") for pattern in find.get("include", [])})
    if not roots:
        raise WheelhouseError(f"{pyproject}: no [tool.setuptools.packages.find] include")
    dest.mkdir(parents=True)
    for path in [pyproject, *project_dir.glob("README*"), *project_dir.glob("LICEN[CS]E*")]:
        if path.is_file():
            shutil.copy2(path, dest / path.name)
    for root in roots:
        shutil.copytree(
            project_dir / root, dest / root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )


def wheel_identity(filename: str) -> tuple[str, str]:
    """(canonical project name, version) of a wheel file name."""
    try:
        name, version, _, _ = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise WheelhouseError(f"not a wheel file name: {filename}") from exc
    return str(name), str(version)


def copy_wheels(source: Path, dest: Path, exclude: list[str]) -> list[Path]:
    """Copy the wheels of `source` into `dest` except excluded projects; every exclude must hit."""
    dropped = {canonicalize_name(name) for name in exclude}
    unmatched = set(dropped)
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for wheel in sorted(source.glob("*.whl")):
        name, _ = wheel_identity(wheel.name)
        if name in dropped:
            unmatched.discard(name)
            continue
        copied.append(Path(shutil.copyfile(wheel, dest / wheel.name)))
    if unmatched:
        raise WheelhouseError(f"exclude names no wheel in {source}: {', '.join(sorted(unmatched))}")
    return copied


def _run_pip(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise WheelhouseError(f"{what} failed (exit {result.returncode}):\n{tail}")
