"""Session fixtures of the real-engine tests: one demo bundle and one offline install, shared.

The bundle build (the trained demo model comes from the cache after the first build) and the
engine venv's installation are the expensive parts, so every e2e module uses the same ones:
test_appliance.py serves them, test_engine_args.py parses flags with that venv's vLLM, and
test_container.py reuses the bundle's model and the installed engine in its image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.netns import NetworkNamespace

REPO = Path(__file__).resolve().parents[2]
SPARKPLANE = str(Path(sys.executable).parent / "sparkplane")
DEMO_PORT = "18080"
# What `sparkplane demo --port DEMO_PORT` installs with, so that re-running it changes nothing.
INSTALL_OPTIONS = ["--yes", "--profile", "demo", "--port", DEMO_PORT, "--bind", "127.0.0.1"]


def sparkplane(*args: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [SPARKPLANE, *args], capture_output=True, text=True, check=check, **kwargs
    )


@dataclass(frozen=True)
class DemoBundle:
    path: Path
    pubkey: Path
    key: Path


@dataclass(frozen=True)
class Installed:
    root: Path
    traces: Path


@pytest.fixture(scope="session")
def netns() -> Iterator[NetworkNamespace]:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("strace"):
        pytest.fail("the end-to-end test needs root, iproute2 and strace (CI has them)")
    with NetworkNamespace.create() as namespace:
        yield namespace


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> DemoBundle:
    staging = tmp_path_factory.mktemp("staging")
    sparkplane("keygen", "--out", str(staging / "keys"))
    out = staging / "bundle"
    done = sparkplane(
        "bundle", "build", str(REPO / "offline-bundle" / "demo.yaml"),
        "--key", str(staging / "keys" / "bundle.key"), "--out", str(out), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return DemoBundle(out, staging / "keys" / "bundle.pub", staging / "keys" / "bundle.key")


@pytest.fixture(scope="session")
def installed(
    demo_bundle: DemoBundle,
    netns: NetworkNamespace,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Installed:
    """`sparkplane install` of the demo bundle inside the loopback-only namespace, under strace."""
    # vLLM binds unix sockets under TMPDIR (ROOT/var/lib/...): keep ROOT short (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="sp-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    traces = tmp_path_factory.mktemp("traces")
    install = netns.run(
        [SPARKPLANE, "install", str(demo_bundle.path), "--root", str(root),
         "--trust", str(demo_bundle.pubkey), *INSTALL_OPTIONS],
        strace_to=traces / "install.trace",
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return Installed(root, traces)
