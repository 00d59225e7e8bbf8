"""`install --inventory`: the inventory, what each host is given, how each host is judged.

The full run, two systemd boxes from one inventory over SSH, is in tests/installer/box.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.core import signing
from installer.bundle.trust import TrustStore
from installer.provision.apply import InstallError, site_vars_in
from installer.provision.fleet import (
    INSTALL_TASK,
    host_outcome,
    host_settings,
    install_inventory,
    trusted_key_files,
)
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


def test_each_host_is_judged_by_its_own_install(tmp_path: Path) -> None:
    said = "installed 1.0.0 at /opt/sparkplane/releases/1.0.0: changed=3; engine ..."
    results = {
        INSTALL_TASK: {
            "a": {"rc": 0, "stdout": f"audit: 2 installer event(s)\n{said}", "stderr": ""},
            "b": {
                "rc": 1,
                "stdout": "",
                "stderr": "error: preflight failed; nothing was installed",
            },
        }
    }
    failure = TaskFailure("c", "Install the control plane offline", "No matching distribution")
    result = RunResult("failed", 2, tmp_path, failures=[failure], results=results)
    a, b, c = (host_outcome(result, name) for name in ("a", "b", "c"))
    assert (a.changed, a.error) == (3, None) and a.output.startswith("audit: 2")
    assert b.error == "error: preflight failed; nothing was installed"
    assert c.error == "task 'Install the control plane offline': No matching distribution"
    assert host_outcome(RunResult("failed", 4, tmp_path), "d").error == (
        "ansible-runner ended 'failed' (rc=4)"
    )


def test_hosts_get_the_keys_as_their_trust_directory_names_them(keys: Path, tmp_path) -> None:
    key = signing.load_public_key(keys / "bundle.pub")
    stored = TrustStore(tmp_path / "trust").add(key)
    (entry,) = trusted_key_files([key])
    assert entry["name"] == stored.name and entry["pem"].encode() == stored.read_bytes()


def test_a_host_gets_its_inventory_settings_and_the_install_defaults() -> None:
    host = {"ansible_host": "10.0.0.2", "sparkplane_engine_port": "18000", "rack": "r1",
            "sparkplane_allow_system_changes": "true",
            "sparkplane_controlplane_audit_wait": "queued"}  # fmt: skip
    assert site_vars_in(host) == {"sparkplane_controlplane_audit_wait": "queued"}
    assert host_settings(host) == {
        "root": "/", "engine_port": 18000, "port": 8080, "bind": "0.0.0.0", "systemd": True,
        "site_vars": {"sparkplane_controlplane_audit_wait": "queued"},
    }  # fmt: skip
    assert host_settings({"sparkplane_allow_system_changes": "false"})["systemd"] is False


def test_an_inventory_without_sparkplane_hosts_is_refused_before_any_write(
    keys: Path, tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "bundle", keys / "bundle.key")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"[other]\nx ansible_connection=local sparkplane_root={tmp_path / 'x'}\n")
    key = signing.load_public_key(keys / "bundle.pub")
    with pytest.raises(InstallError, match="has no host in group 'sparkplane'"):
        install_inventory(bundle, inventory, tmp_path / "control", [key])
    assert not (tmp_path / "x").exists()


def test_an_inventory_that_sets_what_the_installer_decides_is_refused_before_any_write(
    keys: Path, tmp_path: Path
) -> None:
    """The fleet play runs the layout role with the inventory's variables before the host's own
    install checks them: a guard set there would create users on a temp root."""
    bundle = make_bundle(tmp_path / "bundle", keys / "bundle.key")
    inventory = tmp_path / "hosts.ini"
    # No ansible_python_interpreter: should the check regress, the play fails at its first
    # task instead of creating a user on this machine.
    inventory.write_text(
        "[sparkplane]\n"
        f"spark-a ansible_connection=local sparkplane_root={tmp_path / 'a'}"
        " sparkplane_manage_system=true\n"
        f"spark-b ansible_connection=local sparkplane_root={tmp_path / 'b'}"
        " sparkplane_firewall_ssh_port=2222\n"
        "[sparkplane:vars]\n"
        f"sparkplane_etc_dir={tmp_path / 'etc'}\n"
    )
    key = signing.load_public_key(keys / "bundle.pub")
    with pytest.raises(InstallError, match="inventory variables refused") as caught:
        install_inventory(bundle, inventory, tmp_path / "control", [key])
    said = "\n".join(caught.value.details)
    assert "spark-a: sparkplane_manage_system: the installer decides it" in said
    assert "spark-b: sparkplane_etc_dir: derived in group_vars/all.yml" in said
    assert "sparkplane_firewall_ssh_port" not in said
    assert not any((tmp_path / name).exists() for name in ("a", "b", "etc"))
