"""An install killed with SIGKILL mid-way completes on re-run; a concurrent run is refused."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controlplane.appliance.layout import Layout
from controlplane.core import signing
from installer.lifecycle.status import appliance_status
from tests.installer.fixtures.bundles import make_bundle

pytestmark = pytest.mark.slow
SPARKPLANE = str(Path(sys.executable).parent / "sparkplane")


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("recovery")
    signing.generate_keypair(base / "keys")
    return make_bundle(base / "bundle", base / "keys/bundle.key"), base / "keys/bundle.pub"


def cli_install(bundle: Path, root: Path, pub: Path, *extra: str) -> list[str]:
    return [
        SPARKPLANE,
        "install",
        str(bundle),
        "--root",
        str(root),
        "--trust",
        str(pub),
        "--yes",
        "--engine-port",
        "18200",
        "--port",
        "18280",
        *extra,
    ]


def wait_for(path: Path, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "install ended before the kill point"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (ansible-playbook runs in a session of its own)."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def power_cut(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the installer and everything it started, all at the same moment."""
    victims = [process.pid, *descendants(process.pid)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def test_killed_install_never_activates_and_completes_on_rerun(signed, tmp_path: Path) -> None:
    bundle, pub = signed
    root = tmp_path / "root"
    layout = Layout.at(root)
    process = subprocess.Popen(
        cli_install(bundle, root, pub),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill the whole process group (installer + ansible-playbook + pip) while the engine venv
    # is being filled: the worst moment, a venv that exists but is not complete.
    wait_for(layout.release("1.0.0") / "engine-venv" / "bin" / "python", process)
    power_cut(process)
    assert not (layout.release("1.0.0") / ".complete").exists()
    assert not layout.current.exists() and not layout.current.is_symlink()
    status = appliance_status(root, probe_health=False)
    assert status["current"] is None and status["half_installed"] == ["1.0.0"]

    done = subprocess.run(cli_install(bundle, root, pub), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert layout.active_version() == "1.0.0"
    python = layout.current / "engine-venv/bin/python"
    subprocess.run([str(python), "-c", "import tinyengine"], check=True)
    assert (layout.current / "engine-venv/.sparkplane-installed").read_text() == "1.0.0\n"


HOLD_LOCK = """
import sys, time
from controlplane.appliance.layout import Layout
from installer.provision.lock import installer_lock
with installer_lock(Layout.at(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_concurrent_run_is_refused(signed, tmp_path: Path) -> None:
    from installer.provision.apply import InstallError
    from installer.provision.install import install

    bundle, pub = signed
    root = tmp_path / "root"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(InstallError, match=f"another installer run \\(pid {holder.pid}\\)"):
            install(bundle, root, [signing.load_public_key(pub)])
    finally:
        holder.kill()
        holder.wait()
    assert not Layout.at(root).releases.exists()
