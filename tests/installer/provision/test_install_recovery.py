"""An install killed with SIGKILL mid-way completes on re-run; one inventory, two roots, each
ending up like a single-host install (events, audit import, first admin)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controlplane.appliance.events import read_events
from controlplane.appliance.layout import Layout
from controlplane.core import signing
from installer.lifecycle.status import appliance_status
from tests.installer.fixtures.bundles import make_bundle
from tests.installer.fixtures.release import exported_entries, release_cli

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


def test_one_inventory_provisions_two_roots_in_one_run(signed, tmp_path: Path) -> None:
    # The real control plane: each host's own CLI imports its events and creates its admin.
    _, pub = signed
    bundle = make_bundle(tmp_path / "bundle", pub.with_name("bundle.key"), real_controlplane=True)
    roots = {"spark-a": tmp_path / "a", "spark-b": tmp_path / "b"}
    lines = ["[sparkplane]"]
    for index, (host, root) in enumerate(roots.items()):
        lines.append(
            f"{host} ansible_connection=local ansible_python_interpreter={sys.executable}"
            f" sparkplane_root={root} sparkplane_engine_port={18300 + index}"
        )
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("\n".join(lines) + "\n")
    command = [
        SPARKPLANE,
        "install",
        str(bundle),
        "--inventory",
        str(inventory),
        "--root",
        str(tmp_path / "control"),
        "--trust",
        str(pub),
        "--yes",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stdout, done.stdout
    for index, (host, root) in enumerate(roots.items()):
        layout = Layout.at(root)
        assert layout.active_version() == "1.0.0", host
        assert f"--port\n{18300 + index}\n" in layout.engine_args.read_text()
        assert f"installed 1.0.0 on {host}: changed=" in done.stdout
        # Its own lifecycle events, as a single-host install writes them ...
        events = read_events(layout)
        assert [(e["kind"], e["phase"]) for e in events] == [
            ("installer.install", "started"),
            ("installer.install", "succeeded"),
        ], events
        assert all(e["inventory"] == str(inventory) and e["version"] == "1.0.0" for e in events)
        # ... imported into its own audit chain, which verifies ...
        report = done.stdout.split(f"{host} ({root}):\n", 1)[1]
        assert report.startswith("audit: 2 installer event(s) added to the chain"), report
        entries = exported_entries(root, tmp_path / f"{host}.jsonl")
        imported = [
            (e["kind"], e["data"]["phase"]) for e in entries if e["kind"] == "installer.install"
        ]
        assert imported == [(e["kind"], e["phase"]) for e in events]
        verified = release_cli(root, "audit", "verify", "--live")
        assert verified.stdout.strip().endswith("VALID"), verified.stdout + verified.stderr
        # ... its first console admin, with the one-time password 0600 on that host ...
        stored = layout.etc / "initial-admin-password"
        password = stored.read_text().strip()
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and len(password) >= 12
        assert f"first console admin 'admin', one-time password: {password}" in report
        listed = release_cli(root, "admins", "list").stdout
        assert listed.split("\t")[:2] == ["admin", "admin"], listed
        # ... and what upgrade and rollback need to re-apply it on its own.
        saved = json.loads((layout.current / "install-vars.json").read_text())
        alone = saved["inventory"]["sparkplane"]["hosts"]["localhost"]
        assert alone["sparkplane_root"] == str(root)
        assert alone["sparkplane_engine_port"] == 18300 + index
        assert alone["sparkplane_controlplane_port"] == 8080


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
