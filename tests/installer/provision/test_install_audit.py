"""Install with the real control plane: lifecycle events reach the audit chain, first admin,
and the upgrade's health check is one audited completion through the control plane.

The bundle carries this repo's real sparkplane wheel (and its dependencies from the build
cache), so the installer drives the installed release's own CLI exactly as on an appliance.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from controlplane.appliance.events import read_events
from controlplane.appliance.layout import Layout, controlplane_command, read_env_file
from controlplane.appliance.system_info import read_system_info
from controlplane.core import migrations, signing
from installer.lifecycle.healthcheck import HEALTH_TENANT, HealthCheckError, check_health
from installer.lifecycle.status import appliance_status
from installer.lifecycle.upgrade import rollback, uninstall, upgrade
from installer.ops.processes import ManagedProcess
from installer.provision.install import install
from installer.provision.system_tenant import CAPPED_TENANT
from tests.controlplane.harness import free_port
from tests.enginesim import SimHandle, start_simulator
from tests.installer.fixtures.bundles import make_bundle
from tests.installer.fixtures.release import exported_entries, release_cli

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
    engine_port, port = free_port(), free_port()  # the health-check tests serve on them
    ports = ["--engine-port", str(engine_port), "--port", str(port), "--bind", "127.0.0.1"]
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
    second = install(
        bundle,
        root,
        [key],
        "demo",
        engine_port=engine_port,
        controlplane_port=port,
        controlplane_bind="127.0.0.1",
    )
    return root, first.stdout, second, first_file, keys


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
    header, row = listed.stdout.splitlines()[:2]
    assert header.startswith("USER\tROLE\t") and row.split("\t")[:2] == ["admin", "admin"]
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


def test_the_installed_release_built_its_database_with_its_own_migrations(installed) -> None:
    """Alembic and the revisions came from the bundle's wheelhouse, not from this checkout."""
    layout = Layout.at(installed[0])
    shipped = sorted(layout.current.glob("**/controlplane/core/migrations/versions/0*.py"))
    assert [path.name[:4] for path in shipped] == [f"{n:04d}" for n in range(len(shipped))]
    assert any(layout.current.glob("**/site-packages/alembic/__init__.py"))
    database = layout.controlplane_data / "sparkplane.db"
    with closing(sqlite3.connect(database)) as conn:
        (stamped,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert stamped == migrations.head() and "schema_migrations" not in tables


@pytest.fixture
def serving(installed, tmp_path: Path) -> Iterator[tuple[Layout, SimHandle]]:
    """The installed control plane, started with its unit's exact command, in front of the
    engine simulator listening on the engine port the release was installed with."""
    layout = Layout.at(installed[0])
    status = appliance_status(layout.root, probe_health=False)
    engine_port = int(status["engine"]["url"].rsplit(":", 1)[1])
    sim = start_simulator(port=engine_port, models=status["model"]["served_name"], time_scale=0.01)
    log = tmp_path / "controlplane.log"
    process = ManagedProcess.start("controlplane", controlplane_command(layout), {}, log)
    try:
        yield layout, sim
    finally:
        process.stop()
        sim.stop()


def probe_keys(root: Path) -> list[str]:
    """The state (active / revoked) of every key of validate's capped tenant."""
    listed = release_cli(root, "keys", "list", "--tenant", CAPPED_TENANT)
    assert listed.returncode == 0, listed.stderr
    return [line.split("\t")[3] for line in listed.stdout.splitlines()]


def test_health_check_runs_validate_quick_as_the_system_tenant(serving, tmp_path: Path) -> None:
    layout, sim = serving
    result = check_health(layout, timeout=120, interval=0.5)
    assert stat.S_IMODE(layout.system_key.stat().st_mode) == 0o600
    assert probe_keys(layout.root) == ["revoked"]  # the 429 check's key, revoked after the run
    report = json.loads(result.json_path.read_text())
    assert report["passed"] is True and report["quick"] is True, report["checks"]
    assert [check["name"] for check in report["checks"]] == [
        "models listed", "plain completion", "streamed completion",
        "forced tool call, schema-valid arguments", "JSON-schema output", "reasoning on and off",
        "over a tenant's cap: 429", "wrong key: 401", "audit chain verifies",
    ]  # fmt: skip
    assert [point["concurrency"] for point in report["curve"]] == [1, 8]
    assert all(point["direct"]["aggregate_tok_s"] > 0 for point in report["curve"])
    assert sim.stats()["tenants"][HEALTH_TENANT]["completed"] > 10, sim.stats()
    html = result.html_path.read_text()
    assert html.count("<svg") == 2 and "<script" not in html
    # The calls and the report's hash are in the audit chain under the system tenant.
    entries = exported_entries(layout.root, tmp_path / "export.jsonl")
    done = [e for e in entries if e["kind"] == "api.completion" and e["tenant"] == HEALTH_TENANT]
    assert done and {e["data"]["status"] for e in done} == {200}, done[:3]
    refused = [e for e in entries if e["kind"] == "api.completion" and e["tenant"] == CAPPED_TENANT
               and e["data"]["status"] == 429]  # fmt: skip
    assert len(refused) == 1
    (recorded,) = [e for e in entries if e["kind"] == "validate.report"]
    digest = hashlib.sha256(result.json_path.read_bytes()).hexdigest()
    assert recorded["data"]["sha256"] == digest == result.sha256
    listed = release_cli(layout.root, "tenants", "list").stdout
    assert f"{HEALTH_TENANT}\tenabled,system\t" in listed, listed
    refusal = release_cli(layout.root, "tenants", "disable", HEALTH_TENANT)
    assert refusal.returncode == 1 and "cannot be disabled" in refusal.stderr
    capacity = release_cli(layout.root, "capacity", "--json")
    assert json.loads(capacity.stdout)["report"] == result.json_path.name, capacity.stderr


def test_health_check_fails_when_the_engine_does(serving) -> None:
    layout, sim = serving
    sim.set_faults(error_rate=1.0)  # the engine answers /health but fails every completion
    with pytest.raises(HealthCheckError, match=r"plain completion: HTTP 500") as failed:
        check_health(layout, timeout=120, interval=0.5)
    assert "figures measured: HTTP 500" in str(failed.value)
    assert "models listed" not in str(failed.value)  # only the failed checks are named
    assert "active" not in probe_keys(layout.root)
    sim.stop()
    with pytest.raises(HealthCheckError, match=r"not healthy after 2s: engine down"):
        check_health(layout, timeout=2, interval=0.5)


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
