"""Upgrade, rollback (automatic and manual), status and uninstall with real ansible-runner runs.

The tests share one root and run in file order: install 1.0.0, upgrade to 2.0.0, roll back,
a failed upgrade that rolls itself back with the data restored, then uninstall.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from controlplane.appliance.events import read_events
from controlplane.appliance.layout import Layout, read_args_file
from controlplane.core import signing
from installer.lifecycle.status import appliance_status
from installer.lifecycle.upgrade import rollback, uninstall, upgrade
from installer.provision.install import InstallError, install
from tests.installer.fixtures.bundles import make_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("lifecycle")
    signing.generate_keypair(base / "keys")
    key = base / "keys/bundle.key"
    return {
        "v1": make_bundle(base / "v1", key, version="1.0.0"),
        "v2": make_bundle(base / "v2", key, version="2.0.0"),
        "root": base / "root",
        "pub": base / "keys/bundle.pub",
    }


def keys(world):
    return [signing.load_public_key(world["pub"])]


def tenants(layout: Layout) -> list[str]:
    with sqlite3.connect(layout.controlplane_data / "sparkplane.db") as db:
        return [row[0] for row in db.execute("select name from tenants order by name")]


def engine_version(layout: Layout) -> str:
    python = layout.current / "engine-venv/bin/python"
    code = "import tinyengine; print(tinyengine.VERSION)"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


SITE = {"sparkplane_controlplane_audit_wait": "queued", "sparkplane_firewall_ssh_port": 2222}


def saved(layout: Layout, version: str) -> dict:
    return json.loads((layout.release(version) / "install-vars.json").read_text())


def test_install_then_plant_data(world) -> None:
    install(world["v1"], world["root"], keys(world), "throughput", engine_port=18100,
            controlplane_port=18180, site_vars=SITE)  # fmt: skip
    layout = Layout.at(world["root"])
    with sqlite3.connect(layout.controlplane_data / "sparkplane.db") as db:
        db.execute("create table tenants (name text)")
        db.execute("insert into tenants values ('acme')")
    (layout.controlplane_data / "audit-signing.key").write_text("secret")
    assert engine_version(layout) == "1.0.0"


def test_upgrade_switches_and_keeps_data_and_ports(world) -> None:
    layout = Layout.at(world["root"])
    checked = []
    result = upgrade(world["v2"], world["root"], keys(world), health_check=checked.append)
    assert checked == [layout]
    assert result.version == "2.0.0" and layout.active_version() == "2.0.0"
    assert engine_version(layout) == "2.0.0"
    assert layout.installed_versions() == ["1.0.0", "2.0.0"]
    assert tenants(layout) == ["acme"]
    assert (layout.controlplane_data / "audit-signing.key").read_text() == "secret"
    args = read_args_file(layout.engine_args)
    assert args[args.index("--port") + 1] == "18100"  # the running release's port is kept
    # ... and every other setting of its inventory, and its profile (none was given).
    before, after = saved(layout, "1.0.0"), saved(layout, "2.0.0")
    assert after["extravars"]["sparkplane_engine_profile"] == "throughput"
    host = after["inventory"]["sparkplane"]["hosts"]["localhost"]
    assert host == before["inventory"]["sparkplane"]["hosts"]["localhost"]
    assert SITE.items() <= host.items()
    assert "SPARKPLANE_AUDIT_WAIT=queued" in layout.controlplane_env.read_text()
    assert "tcp dport 2222 accept" in (layout.etc / "nftables.conf").read_text()
    backups = list(layout.backups.iterdir())
    assert len(backups) == 1 and backups[0].name.startswith("1.0.0-")
    phases = [e["phase"] for e in read_events(layout) if e["kind"] == "installer.upgrade"]
    assert phases == ["started", "succeeded", "switching", "succeeded"]


def test_manual_rollback_returns_to_the_previous_release(world) -> None:
    layout = Layout.at(world["root"])
    assert rollback(world["root"]) == "1.0.0"
    assert os.readlink(layout.current) == "releases/1.0.0"
    assert engine_version(layout) == "1.0.0"
    assert tenants(layout) == ["acme"]
    with pytest.raises(InstallError, match="already current"):
        rollback(world["root"], to="1.0.0")


def test_failed_health_check_rolls_back_and_restores_the_data(world) -> None:
    layout = Layout.at(world["root"])
    # On a box the data belongs to the service user (here: nobody), mode 0750.
    for path in [layout.controlplane_data, *layout.controlplane_data.rglob("*")]:
        os.chown(path, 65534, 65534)
    layout.controlplane_data.chmod(0o750)

    def broken_upgrade(checked: Layout) -> None:
        # The new release "migrated" the database, then fails to come up.
        with sqlite3.connect(checked.controlplane_data / "sparkplane.db") as db:
            db.execute("insert into tenants values ('written-by-2.0.0')")
        raise RuntimeError("engine /health: down")

    with pytest.raises(InstallError, match=r"rolled back to 1\.0\.0") as caught:
        upgrade(world["v2"], world["root"], keys(world), health_check=broken_upgrade)
    assert caught.value.details == ["engine /health: down"]
    assert layout.active_version() == "1.0.0"
    assert engine_version(layout) == "1.0.0"
    assert tenants(layout) == ["acme"]
    # The restored data is the service's again, as it was: owner and mode kept.
    restored = [layout.controlplane_data, *layout.controlplane_data.rglob("*")]
    assert {(p.stat().st_uid, p.stat().st_gid) for p in restored} == {(65534, 65534)}
    assert stat.S_IMODE(layout.controlplane_data.stat().st_mode) == 0o750
    kinds = [(e["kind"], e["phase"]) for e in read_events(layout)][-3:]
    assert kinds[-1] == ("installer.upgrade", "rolled_back")


def test_status_reports_release_model_and_health(world) -> None:
    status = appliance_status(world["root"])
    assert status["current"] == "1.0.0"
    assert status["releases"] == ["1.0.0", "2.0.0"]
    assert status["profile"] == "throughput"
    assert status["model"]["served_name"] == "tiny-chat"
    assert status["engine"]["health"].startswith("down")  # nothing started it
    assert status["services"]["sparkplane-engine.service"] == "not managed here"


def test_site_variables_are_checked_before_anything_is_written(world, tmp_path) -> None:
    root = tmp_path / "other-root"
    for site, problem in (
        ({"sparkplane_firewal_ssh_port": 2}, "not a variable of the playbooks"),
        ({"sparkplane_engine_port": 9}, "give it with --engine-port"),
        ({"sparkplane_engine_profile": "x"}, "comes from the bundle and the plan"),
    ):
        with pytest.raises(InstallError, match="site variables refused") as caught:
            install(world["v1"], root, keys(world), site_vars=site)
        assert problem in caught.value.details[0]
    assert not root.exists()


def test_uninstall_keeps_data_then_purge_removes_everything(world) -> None:
    layout = Layout.at(world["root"])
    removed = uninstall(world["root"])
    assert layout.current in removed and not layout.releases.exists()
    assert not layout.models.exists() and not layout.engine_args.exists()
    assert tenants(layout) == ["acme"]
    assert read_events(layout)[-1]["kind"] == "installer.uninstall"
    assert appliance_status(world["root"])["current"] is None
    uninstall(world["root"], purge=True)
    assert not layout.var.exists() and not layout.opt.exists() and not layout.etc.exists()
