"""Install with the real control plane: lifecycle events reach the audit chain, first admin.

The bundle carries this repo's real sparkplane wheel (and its dependencies from the build
cache), so the installer drives the installed release's own CLI exactly as on an appliance.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.console.system_info import read_system_info
from installer import signing
from installer.events import read_events
from installer.install import install
from installer.layout import Layout, read_env_file
from installer.lifecycle import rollback, uninstall, upgrade
from tests.installer.fixtures.bundles import make_bundle

pytestmark = pytest.mark.slow
SPARKPLANE = str(Path(sys.executable).parent / "sparkplane")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory):
    keys = tmp_path_factory.mktemp("keys")
    signing.generate_keypair(keys)
    bundle = make_bundle(
        tmp_path_factory.mktemp("b") / "bundle", keys / "bundle.key", real_controlplane=True
    )
    root = tmp_path_factory.mktemp("root")
    # The first install as an operator runs it (the output must show the password once) ...
    ports = ["--engine-port", "18100", "--port", "18180"]
    trust = ["--trust", str(keys / "bundle.pub"), "--yes"]
    first = subprocess.run(
        [SPARKPLANE, "install", str(bundle), "--root", str(root), *trust, *ports],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    password_file = Layout.at(root).etc / "initial-admin-password"
    first_file = password_file.read_bytes()
    # ... the second through the API, to look at what it returns.
    key = signing.load_public_key(keys / "bundle.pub")
    second = install(bundle, root, [key], "demo", engine_port=18100, controlplane_port=18180)
    return root, first.stdout, second, first_file, keys


def release_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    layout = Layout.at(root)
    env = {"PATH": "/usr/bin:/bin", **read_env_file(layout.controlplane_env)}
    program = layout.current / "controlplane-venv/bin/sparkplane"
    return subprocess.run(
        [str(program), *args], env=env, capture_output=True, text=True, timeout=300
    )


def exported_entries(root: Path, out: Path) -> list[dict]:
    """(envelope + data) of every entry of a real signed export (docs/audit.md format)."""
    done = release_cli(root, "audit", "export", "--reason", "installer test", "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return [{**line["e"], "data": line.get("d") or {}} for line in lines if "e" in line]


def test_lifecycle_events_are_in_a_valid_chain_once_each(installed, tmp_path) -> None:
    root, first_output, second, _, _ = installed
    assert "warning" not in first_output and not second.warnings, (first_output, second.warnings)
    assert "audit: 2 installer event(s) added to the chain" in first_output  # started+succeeded
    assert second.audit_imported == 2
    verified = release_cli(root, "audit", "verify", "--live")
    assert verified.returncode == 0 and verified.stdout.strip().endswith("VALID"), verified.stdout
    entries = exported_entries(root, tmp_path / "export.jsonl")
    imported = [e for e in entries if e["kind"].startswith("installer.")]
    events = read_events(Layout.at(root))
    assert len(imported) == len(events) == 4
    for entry, event in zip(imported, events, strict=True):
        assert entry["kind"] == event["kind"] == "installer.install"
        fields = {key: value for key, value in event.items() if key != "kind"}
        assert fields.items() <= entry["data"].items()
    assert [e["data"]["phase"] for e in imported] == ["started", "succeeded"] * 2
    # The admin was created between the two installs, through the same chain.
    kinds = [e["kind"] for e in entries]
    assert kinds.index("admin.user_create") == 2, kinds


def test_first_admin_is_created_once_with_a_0600_password(installed) -> None:
    root, first_output, second, first_file, _ = installed
    stored = Layout.at(root).etc / "initial-admin-password"
    password = first_file.decode().strip()
    assert len(password) >= 12 and stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert f"first console admin 'admin', one-time password: {password}" in first_output
    assert f"stored in {stored} (mode 0600)" in first_output
    # The second install finds the admin and neither creates nor shows anything.
    assert second.first_admin is None
    assert stored.read_bytes() == first_file
    listed = release_cli(root, "admins", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split("\t")[:2] == ["admin", "admin"]
    assert "must-change-password" in listed.stdout


def test_console_files_describe_the_current_release(installed) -> None:
    root, _, second, _, _ = installed
    state = Layout.at(root).installer_state
    plan = json.loads((state / "plan.json").read_text())
    assert plan["profile"] == "demo" and plan["max_num_seqs"] == second.plan.max_num_seqs
    assert plan["table"] and {"context", "bytes_per_sequence", "sequences_that_fit"} <= set(
        plan["table"][0]
    )
    preflight = json.loads((state / "preflight.json").read_text())
    assert preflight["checks"] and all(
        {"name", "status", "detail"} <= set(check) for check in preflight["checks"]
    )
    env = read_env_file(Layout.at(root).engine_env)
    assert env["SPARKPLANE_ENGINE_PROFILE"] == "demo"
    # What the console's System page makes of them.
    info = read_system_info(root)
    assert info.profile == "demo" and not info.problems, info.problems
    assert info.plan == plan and info.preflight == preflight


def test_upgrade_and_rollback_enter_the_chain(installed, tmp_path) -> None:
    root, _, _, _, keys = installed
    bundle = make_bundle(
        tmp_path / "bundle-2", keys / "bundle.key", version="2.0.0", real_controlplane=True
    )
    key = signing.load_public_key(keys / "bundle.pub")
    upgraded = upgrade(bundle, root, [key], "demo")
    assert upgraded.version == "2.0.0" and not upgraded.warnings, upgraded.warnings
    assert upgraded.first_admin is None  # only a first install creates the admin
    assert rollback(root) == "1.0.0"
    entries = exported_entries(root, tmp_path / "export.jsonl")
    lifecycle = {"installer.upgrade", "installer.rollback"}
    phases = [(e["kind"], e["data"]["phase"]) for e in entries if e["kind"] in lifecycle]
    assert phases == [
        ("installer.upgrade", "started"),
        ("installer.upgrade", "succeeded"),  # the staged install of the new release
        ("installer.upgrade", "switching"),
        ("installer.upgrade", "succeeded"),
        ("installer.rollback", "started"),
        ("installer.rollback", "succeeded"),
    ], phases
    assert release_cli(root, "audit", "verify", "--live").returncode == 0
    assert json.loads((Layout.at(root).installer_state / "plan.json").read_text())["profile"]


def test_uninstall_imports_its_start_before_the_release_goes(installed, tmp_path) -> None:
    # Runs last in this module: it removes the release the other tests use.
    root, _, _, _, _ = installed
    layout = Layout.at(root)
    data = layout.controlplane_data
    uninstall(root)
    assert not layout.current.exists() and data.is_dir()
    kinds = [e["kind"] for e in read_events(layout)]
    assert kinds[-2:] == ["installer.uninstall", "installer.uninstall"]
    # The chain got the "started" line; checking it needs a control plane: read the DB.
    import sqlite3

    with sqlite3.connect(data / "sparkplane.db") as db:
        rows = db.execute("select kind from audit_entries where kind like 'installer.%'").fetchall()
    assert [kind for (kind,) in rows].count("installer.uninstall") == 1
