"""The walking skeleton for real: build, verify, install offline, serve the real vLLM, call it.

One module-scoped appliance is shared by every test here (vLLM takes about a minute to start on
this machine). The install and the demo run inside a network namespace that has only loopback,
under strace, so the test can prove that nothing tried to leave the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.appliance.layout import read_env_file
from tests.e2e.netns import NetworkNamespace, outbound_connects, signal_traced

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SPARKPLANE = str(Path(sys.executable).parent / "sparkplane")
DEMO_PORT = "18080"
# What `sparkplane demo --port DEMO_PORT` installs with, so that re-running it changes nothing.
INSTALL_OPTIONS = ["--yes", "--profile", "demo", "--port", DEMO_PORT, "--bind", "127.0.0.1"]


def sparkplane(*args: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [SPARKPLANE, *args], capture_output=True, text=True, check=check, **kwargs
    )


@pytest.fixture(scope="module")
def netns() -> Iterator[NetworkNamespace]:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("strace"):
        pytest.fail("the end-to-end test needs root, iproute2 and strace (CI has them)")
    with NetworkNamespace.create() as namespace:
        yield namespace


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    staging = tmp_path_factory.mktemp("staging")
    sparkplane("keygen", "--out", str(staging / "keys"))
    out = staging / "bundle"
    done = sparkplane(
        "bundle", "build", str(REPO / "offline-bundle" / "demo.yaml"),
        "--key", str(staging / "keys" / "bundle.key"), "--out", str(out), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out, staging / "keys" / "bundle.pub"


@pytest.fixture(scope="module")
def appliance(
    bundle: tuple[Path, Path],
    netns: NetworkNamespace,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[Path, subprocess.Popen[str], Path]]:
    """Install offline inside the namespace, then run `sparkplane demo` there."""
    bundle_dir, pubkey = bundle
    # vLLM binds unix sockets under TMPDIR (ROOT/var/lib/...): keep ROOT short (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="sp-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    traces = tmp_path_factory.mktemp("traces")
    install = netns.run(
        [SPARKPLANE, "install", str(bundle_dir), "--root", str(root), "--trust", str(pubkey),
         *INSTALL_OPTIONS],
        strace_to=traces / "install.trace",
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    log = (traces / "demo.log").open("w")
    demo = netns.popen(
        [SPARKPLANE, "demo", "--root", str(root), "--bundle", str(bundle_dir), "--port", DEMO_PORT],
        strace_to=traces / "demo.trace",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 900
    while not (root / "demo.json").exists():
        if demo.poll() is not None:
            pytest.fail(f"demo exited {demo.returncode}:\n{(traces / 'demo.log').read_text()}")
        assert time.monotonic() < deadline, "demo did not come up in 15 minutes"
        time.sleep(1)
    yield root, demo, traces
    if demo.poll() is None:
        signal_traced(demo, signal.SIGTERM)
        demo.wait(timeout=60)
    log.close()


def test_bundle_verifies(bundle: tuple[Path, Path]) -> None:
    bundle_dir, pubkey = bundle
    done = sparkplane("bundle", "verify", str(bundle_dir), "--trust", str(pubkey), check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_second_install_changes_nothing(
    appliance: tuple[Path, subprocess.Popen[str], Path],
    bundle: tuple[Path, Path],
    netns: NetworkNamespace,
) -> None:
    root, _, traces = appliance
    bundle_dir, pubkey = bundle
    again = netns.run(
        [SPARKPLANE, "install", str(bundle_dir), "--root", str(root), "--trust", str(pubkey),
         *INSTALL_OPTIONS],
        strace_to=traces / "reinstall.trace",
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert re.search(r"\bchanged[=: ]+0\b", again.stdout + again.stderr), again.stdout[-2000:]


def test_openai_sdk_through_the_control_plane(
    appliance: tuple[Path, subprocess.Popen[str], Path], netns: NetworkNamespace
) -> None:
    root, _, _ = appliance
    demo = json.loads((root / "demo.json").read_text())
    assert set(demo) >= {"url", "model", "api_key", "console_url", "admin_user", "admin_password"}
    done = netns.run([sys.executable, str(REPO / "tests" / "e2e" / "sdk_client.py"),
                      str(root / "demo.json")])  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["models"] == [demo["model"]]
    assert result["plain"]["completion_tokens"] == 12
    assert result["plain"]["prompt_tokens"] > 0
    assert result["stream"]["chunks"] >= 2
    assert result["stream"]["completion_tokens"] is None, "usage is stripped when not asked for"
    assert result["stream_with_usage"]["completion_tokens"] == 12
    assert result["wrong_key"]["status"] == 401
    assert set(result["wrong_key"]["body"]) >= {"message", "type", "code"}


def test_context_cap_counts_with_the_engines_own_tokenizer(
    appliance: tuple[Path, subprocess.Popen[str], Path], netns: NetworkNamespace
) -> None:
    # The cap relies on vLLM's /tokenize counting a chat prompt exactly as the completion's
    # usage does: with the real engine, a filled-in max_tokens must land on the cap exactly.
    root, _, _ = appliance
    demo = json.loads((root / "demo.json").read_text())
    env = {**os.environ, **read_env_file(root / "etc" / "sparkplane" / "controlplane.env")}
    cap = 40
    sparkplane("tenants", "create", "capped", "--max-context-tokens", str(cap),
               "--models", demo["model"], env=env)  # fmt: skip
    key = sparkplane("keys", "create", "--tenant", "capped", env=env).stdout.splitlines()[-1]
    done = netns.run([sys.executable, str(REPO / "tests" / "e2e" / "context_cap_client.py"),
                      str(root / "demo.json"), key, str(cap)])  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    usage = result["filled"]
    assert 0 < usage["prompt_tokens"] < cap
    assert usage["prompt_tokens"] + usage["completion_tokens"] == cap, usage
    assert result["over"]["status"] == 400 and result["over"]["code"] == "context_length_exceeded"


def test_audit_chain_verifies_offline(
    appliance: tuple[Path, subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    root, _, _ = appliance
    env = {**os.environ, **read_env_file(root / "etc" / "sparkplane" / "controlplane.env")}
    export = tmp_path / "audit.jsonl"
    sparkplane("audit", "export", "--reason", "end-to-end test", "--out", str(export), env=env)
    lines = export.read_text().splitlines()
    assert any("api.completion" in line for line in lines)
    pubkeys = list((root / "var" / "lib" / "sparkplane" / "controlplane").glob("audit*.pub"))
    assert pubkeys, "the audit public key is kept next to the database"
    done = sparkplane("audit", "verify", str(export), "--pubkey", str(pubkeys[0]), check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sigterm_stops_everything_and_nothing_left_the_box(
    appliance: tuple[Path, subprocess.Popen[str], Path],
) -> None:
    root, demo, traces = appliance
    signal_traced(demo, signal.SIGTERM)
    demo.wait(timeout=60)
    time.sleep(1)
    leftovers = subprocess.run(
        ["pgrep", "-f", str(root)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftovers == [], f"processes still running: {leftovers}"
    assert not (root / "demo.json").exists()
    for trace in traces.glob("*.trace"):
        assert outbound_connects(trace) == [], f"{trace.name}: tried to leave the machine"


def test_tampered_bundle_is_refused_and_installs_nothing(
    bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle_dir, pubkey = bundle
    tampered = tmp_path / "tampered"
    # Hard links keep the copy cheap; the one file we change is copied for real first.
    shutil.copytree(bundle_dir, tampered, copy_function=os.link)
    weights = next((tampered / "models").rglob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    weights.unlink()
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    root = tmp_path / "fresh-root"
    done = sparkplane(
        "install", str(tampered), "--root", str(root), "--trust", str(pubkey), "--yes",
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert weights.name in done.stdout + done.stderr
    assert not root.exists() or not any(root.iterdir()), "nothing may be created on a bad bundle"
