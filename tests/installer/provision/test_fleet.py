"""`install --inventory`: which hosts the control node finishes itself, and what it saves.

The full run over two local roots with the real control plane is in test_install_recovery.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.appliance.layout import Layout
from controlplane.core import signing
from installer.provision.apply import InstallError
from installer.provision.fleet import FleetHost, host_errors, install_inventory, remote_warning
from installer.provision.runner import RunResult, TaskFailure, inventory_hosts
from tests.installer.fixtures.bundles import REPO, make_bundle

INVENTORY = """
[sparkplane]
spark-a ansible_connection=local sparkplane_root={root} sparkplane_engine_port=18300
spark-b ansible_host=10.0.0.2 sparkplane_allow_system_changes=true

[sparkplane:children]
racks

[racks]
spark-c ansible_host=10.0.0.3 sparkplane_allow_system_changes=false

[elsewhere]
not-a-spark ansible_connection=local
"""


def test_inventory_hosts_are_the_group_and_its_children_with_their_vars(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(INVENTORY.format(root=tmp_path / "a"))
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "sparkplane.yml").write_text("sparkplane_controlplane_port: 9443\n")
    hosts = inventory_hosts(inventory, tmp_path / "runner", REPO / "playbooks", "sparkplane")
    assert list(hosts) == ["spark-a", "spark-b", "spark-c"]
    assert hosts["spark-a"]["ansible_connection"] == "local"
    assert hosts["spark-a"]["sparkplane_engine_port"] == 18300
    assert {h["sparkplane_controlplane_port"] for h in hosts.values()} == {9443}


def test_a_local_host_is_saved_alone_with_the_playbook_defaults(tmp_path: Path) -> None:
    host = FleetHost("spark-a", {"ansible_connection": "local", "sparkplane_root": str(tmp_path)})
    assert host.local and host.layout == Layout.at(tmp_path)
    saved = host.release_inventory()["sparkplane"]["hosts"]["localhost"]
    assert saved["sparkplane_root"] == str(tmp_path)
    assert (saved["sparkplane_engine_port"], saved["sparkplane_controlplane_port"]) == (8000, 8080)
    assert saved["sparkplane_allow_system_changes"] is False


@pytest.mark.parametrize(("given", "systemd"), [("true", True), ("false", False), (True, True)])
def test_a_remote_host_is_named_with_the_command_that_finishes_it(given, systemd) -> None:
    host = FleetHost("spark-b", {"sparkplane_allow_system_changes": given})
    assert not host.local and host.layout.root == Path("/")
    warning = remote_warning(host, Path("/media/bundle"))
    command = "sparkplane install /media/bundle --root / --engine-port 8000 --port 8080"
    assert warning.startswith("spark-b is not a local-connection host") and command in warning
    assert warning.endswith("--systemd' (idempotent: it changes nothing else)") == systemd


def test_each_host_is_judged_on_its_own(tmp_path: Path) -> None:
    a, b = (FleetHost(n, {"sparkplane_root": str(tmp_path / n)}) for n in ("a", "b"))
    for host in (a, b):
        host.layout.releases.mkdir(parents=True)
        (host.layout.release("1.0.0")).mkdir()
        host.layout.current.symlink_to("releases/1.0.0")
    failed_on_b = RunResult("failed", 2, tmp_path, failures=[TaskFailure("b", "pip", "boom")])
    assert host_errors(failed_on_b, a, "1.0.0") == []
    assert host_errors(failed_on_b, b, "1.0.0") == ["task 'pip': boom"]
    assert host_errors(RunResult("failed", 1, tmp_path), a, "1.0.0") == [
        "ansible-runner ended 'failed' (rc=1)"
    ]
    ok = RunResult("successful", 0, tmp_path)
    assert host_errors(ok, a, "2.0.0") == ["current is 1.0.0, not 2.0.0"]


def test_an_inventory_without_sparkplane_hosts_is_refused_before_any_write(
    keys: Path, tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "bundle", keys / "bundle.key")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"[other]\nx ansible_connection=local sparkplane_root={tmp_path / 'x'}\n")
    key = signing.load_public_key(keys / "bundle.pub")
    with pytest.raises(InstallError, match="has no host in group 'sparkplane'"):
        install_inventory(bundle, inventory, tmp_path / "control", [key], memory_bytes=2**34)
    assert not (tmp_path / "x").exists()
