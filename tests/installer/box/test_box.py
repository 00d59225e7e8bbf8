"""The installer on real systemd boxes, reached over SSH, in the order an appliance lives.

Two boxes are provisioned from one inventory; box A then serves a completion and the console as
the `sparkplane` user, is rebooted, fails an upgrade's health check (rolled back) and is
uninstalled. The tests run in file order and build on each other (they share the boxes of
conftest.py: one rootfs, one image, two boots per session).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.core import signing
from installer.lifecycle.units import ALL_UNITS, UNITS
from tests.installer.box.conftest import BoxWorld
from tests.installer.box.machine import Box
from tests.installer.box.probes import (
    RELEASE_CLI,
    complete,
    connect_as,
    console_pages,
    release_cli,
    wait_ready,
)

pytestmark = pytest.mark.slow
PORT = 18080  # box A's control plane (inventory host var); box B keeps the defaults
ENGINE_PORT = 18000
SITE = {  # settings a site keeps in its inventory; every install and upgrade must keep them
    "sparkplane_allow_system_changes": "true",
    "sparkplane_controlplane_audit_wait": "queued",
    "sparkplane_firewall_ssh_port": "2222",
}


def inventory(world: BoxWorld, **site: str) -> Path:
    """The boxes' inventory: SITE's settings, and `site`'s over them."""
    lines = ["[sparkplane]"]
    for name, box in world.boxes.items():
        ports = {"sparkplane_controlplane_port": PORT, "sparkplane_engine_port": ENGINE_PORT}
        host_vars = box.ssh_vars(world.ssh_key) | (ports if name == "a" else {})
        lines.append(f"spark-{name} " + " ".join(f"{k}={json.dumps(str(v))}"
                                                  for k, v in host_vars.items()))  # fmt: skip
    lines += ["", "[sparkplane:vars]", *(f"{key}={value}" for key, value in (SITE | site).items())]
    path = world.base / "hosts.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def read(box: Box, path: str) -> str:
    return box.exec("cat", path).stdout


def installed_vars(box: Box, version: str) -> dict[str, object]:
    saved = json.loads(read(box, f"/opt/sparkplane/releases/{version}/install-vars.json"))
    host = saved["inventory"]["sparkplane"]["hosts"]["localhost"]
    return {"host": host, "profile": saved["extravars"]["sparkplane_engine_profile"]}


def phases(box: Box) -> list[tuple[str, str]]:
    lines = read(box, "/var/lib/sparkplane/installer/events.jsonl").splitlines()
    return [(event["kind"], event["phase"]) for event in map(json.loads, lines)]


def unit_users(box: Box) -> dict[str, str]:
    users = {}
    for unit in UNITS:
        shown = box.unit(unit, "ActiveState", "MainPID")
        assert shown["ActiveState"] == "active", (unit, shown)
        users[unit] = box.exec("ps", "-o", "user=", "-p", shown["MainPID"]).stdout.strip()
    return users


def firewall_rules(box: Box) -> str:
    return box.exec("nft", "list", "table", "inet", "sparkplane", check=False).stdout


def init_started(box: Box) -> str:
    """When PID 1 started (clock ticks since the kernel booted): changes with every boot."""
    return read(box, "/proc/1/stat").rsplit(")", 1)[1].split()[19]


def engine_version(box: Box) -> str:
    code = "import vllm.entrypoints.openai.api_server as s; print(s.VERSION)"
    python = "/opt/sparkplane/current/engine-venv/bin/python"
    return box.exec(python, "-c", code, user="sparkplane").stdout.strip()


def test_two_boxes_from_one_inventory_end_up_like_single_host_installs(box_world) -> None:
    world = box_world
    output = world.provision(world.bundle("1.0.0"), inventory(world))
    fingerprint = signing.fingerprint(signing.load_public_key(world.keys / "bundle.pub"))
    for name, box in world.boxes.items():
        # Each host ran the single-host install on itself: its own events, preflight, plan.
        assert phases(box) == [("installer.install", "started"), ("installer.install", "succeeded")]
        for state in ("preflight.json", "plan.json"):
            assert json.loads(read(box, f"/var/lib/sparkplane/installer/{state}"))
            assert json.loads(read(box, f"/opt/sparkplane/releases/1.0.0/{state}"))
        trusted = box.exec(RELEASE_CLI, "bundle", "trusted", "--root", "/").stdout
        assert f"trusted  {fingerprint}" in trusted
        saved = installed_vars(box, "1.0.0")
        host = saved["host"]
        assert isinstance(host, dict) and saved["profile"] == "demo"
        assert host["sparkplane_root"] == "/" and host["sparkplane_allow_system_changes"] is True
        assert host["sparkplane_controlplane_audit_wait"] == "queued"
        assert str(host["sparkplane_firewall_ssh_port"]) == "2222"
        expected_port = PORT if name == "a" else 8080
        assert int(str(host["sparkplane_controlplane_port"])) == expected_port
        # The first admin, with its one-time password stored 0600 on the host and shown once.
        stat = box.exec("stat", "-c", "%a %U", "/etc/sparkplane/initial-admin-password").stdout
        assert stat.split() == ["600", "root"]
        password = read(box, "/etc/sparkplane/initial-admin-password").strip()
        assert f"one-time password: {password}" in output
        assert release_cli(box, "admins", "list").splitlines()[1].startswith("admin\tadmin\t")
        assert release_cli(box, "audit", "verify", "--live").strip().endswith("VALID")
        world.notes[f"password-{name}"] = password
    assert "installed 1.0.0 on spark-a" in output and "installed 1.0.0 on spark-b" in output
    world.boxes.pop("b").remove()  # the lifecycle goes on with box A alone


def test_units_run_as_the_service_user_and_serve_a_completion(box_world) -> None:
    box = box_world.boxes["a"]
    assert unit_users(box) == dict.fromkeys(UNITS, "sparkplane")
    for unit in ALL_UNITS:
        assert box.exec("systemctl", "is-enabled", unit).stdout.strip() == "enabled"
    owners = box.exec("find", "/var/lib/sparkplane/controlplane", "!", "-user", "sparkplane")
    assert owners.stdout == "", owners.stdout
    release_cli(box, "tenants", "create", "acme", "--max-concurrency", "2")
    key = release_cli(box, "keys", "create", "--tenant", "acme").strip().splitlines()[-1]
    box_world.notes["key"] = key
    answer = complete(box, PORT, key, "tiny-chat")
    assert answer["status"] == 200, answer


def test_console_dashboard_and_system_page_answer_as_the_service_user(box_world) -> None:
    box = box_world.boxes["a"]
    password = str(box_world.notes["password-a"])
    pages = console_pages(box, PORT, "admin", password, "a new passphrase for the box")
    assert pages["statuses"] == {"signin": 303, "password": 303, "dashboard": 200, "system": 200}
    system = str(pages["system"])
    assert "installer.install" in system and "1.0.0" in system
    assert "profile: demo" in str(pages["dashboard"])


def test_a_reboot_brings_everything_back_firewall_included(box_world) -> None:
    box = box_world.boxes["a"]
    assert "tcp dport 2222 accept" in firewall_rules(box)
    booted = init_started(box)
    box.reboot()
    assert init_started(box) != booted  # systemd started again as PID 1
    assert unit_users(box) == dict.fromkeys(UNITS, "sparkplane")
    rules = firewall_rules(box)
    assert "policy drop" in rules and f"tcp dport {PORT} accept" in rules, rules
    wait_ready(box, PORT)
    assert complete(box, PORT, str(box_world.notes["key"]), "tiny-chat")["status"] == 200
    # The rules loaded at boot keep other local accounts off the engine's port, not off ours.
    assert connect_as(box, "nobody", ENGINE_PORT) == "ConnectionRefusedError"
    assert connect_as(box, "nobody", PORT) == "connected"
    assert connect_as(box, "sparkplane", ENGINE_PORT) == "connected"
    assert connect_as(box, "root", ENGINE_PORT) == "connected"


def test_upgrade_keeps_every_setting_and_rolls_back_onto_readable_data(box_world) -> None:
    box = box_world.boxes["a"]
    bundle = box_world.bundle("2.0.0")
    # The new release's engine fails every completion: its health check cannot pass.
    faults = {"version": "2.0.0", "faults": {"error_rate": 1.0}}
    box.write("/var/lib/sparkplane/engine/cache/sim-faults.json", json.dumps(faults))
    # The documented command: profile, ports, --systemd and the site's settings all come from
    # the running release (so the health check runs: the units were restarted).
    done = box.exec(RELEASE_CLI, "upgrade", str(bundle), "--root", "/", "--health-timeout", "120",
                    check=False)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "failed its health check; rolled back to 1.0.0" in output, output
    assert "HTTP 500" in output, output
    # The new release was installed with every setting of the running one, and its profile.
    before, after = installed_vars(box, "1.0.0"), installed_vars(box, "2.0.0")
    assert after["profile"] == before["profile"] == "demo"
    assert isinstance(before["host"], dict) and isinstance(after["host"], dict)
    interpreter = "ansible_python_interpreter"  # the running installer's own, not a setting
    assert {k: v for k, v in after["host"].items() if k != interpreter} == {
        k: v for k, v in before["host"].items() if k != interpreter
    }
    # Rolled back: 1.0.0 serves again, as the service user, on data the service can open.
    assert engine_version(box) == "1.0.0"
    assert unit_users(box) == dict.fromkeys(UNITS, "sparkplane")
    owners = box.exec("find", "/var/lib/sparkplane/controlplane", "!", "-user", "sparkplane")
    assert owners.stdout == "", owners.stdout
    wait_ready(box, PORT)
    assert "acme\tenabled" in release_cli(box, "tenants", "list")
    assert complete(box, PORT, str(box_world.notes["key"]), "tiny-chat")["status"] == 200
    assert "SPARKPLANE_AUDIT_WAIT=queued" in read(box, "/etc/sparkplane/controlplane.env")
    assert "tcp dport 2222 accept" in firewall_rules(box)
    assert phases(box)[-1] == ("installer.upgrade", "rolled_back")
    assert release_cli(box, "audit", "verify", "--live").strip().endswith("VALID")


def test_the_firewall_turned_off_is_unloaded_and_nothing_loads_it_again(box_world) -> None:
    box = box_world.boxes["a"]
    assert "tcp dport 2222 accept" in firewall_rules(box)
    box_world.provision(box_world.bundle("1.0.0"),
                        inventory(box_world, sparkplane_firewall_enabled="false"))  # fmt: skip
    assert firewall_rules(box) == ""
    state = box.unit("sparkplane-firewall.service", "ActiveState", "UnitFileState")
    assert state["ActiveState"] == "inactive" and state["UnitFileState"] != "enabled", state
    for gone in (
        "/etc/systemd/system/sparkplane-firewall.service",
        "/etc/sparkplane/nftables.conf",
    ):
        assert box.exec("test", "-e", gone, check=False).returncode == 1, gone
    wait_ready(box, PORT)  # the rest serves on
    assert complete(box, PORT, str(box_world.notes["key"]), "tiny-chat")["status"] == 200


def test_uninstall_stops_and_disables_the_units_and_unloads_the_rules(box_world) -> None:
    box = box_world.boxes["a"]
    done = box.exec(RELEASE_CLI, "uninstall", "--root", "/")
    assert "kept /var/lib/sparkplane" in done.stdout, done.stdout
    for unit in ALL_UNITS:
        state = box.unit(unit, "ActiveState", "UnitFileState")
        assert state["ActiveState"] == "inactive" and state["UnitFileState"] != "enabled", state
    assert box.exec("pgrep", "-u", "sparkplane", check=False).stdout == ""
    assert firewall_rules(box) == ""
    assert box.exec("test", "-f", "/var/lib/sparkplane/controlplane/sparkplane.db").returncode == 0
