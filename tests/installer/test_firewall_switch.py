"""`sparkplane_firewall_enabled` turned off and on again: the activate role's firewall tasks and
handlers in a real ansible-playbook run against a temp root.

systemctl is a stand-in first on PATH that keeps each unit's state and logs every call, so the
test sees what the role asks systemd to do on a managed root (`/` with --systemd); the unit's
own ExecStop (`nft delete table`, tests/installer/test_templates.py) unloads the rules when it
stops. The systemd box (tests/installer/box) turns the firewall off for real.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from controlplane.appliance.layout import Layout
from tests.installer.fixtures.role_tasks import REPO, run_role_tasks

FIREWALL = "sparkplane-firewall.service"

# Unit state in STATE (json), each call appended to STATE.log; a unit is known while its file
# is in UNITS, as systemd knows it after a daemon-reload.
FAKE_SYSTEMCTL = """#!{python}
import json, os, sys
from pathlib import Path
state_path = Path(os.environ["FAKE_SYSTEMCTL_STATE"])
units = Path(os.environ["FAKE_SYSTEMCTL_UNITS"])
words = [word for word in sys.argv[1:] if not word.startswith("-")]
with open(f"{{state_path}}.log", "a") as log:
    log.write(" ".join(words) + "\\n")
state = json.loads(state_path.read_text()) if state_path.exists() else {{}}
verb, unit = (words + ["", ""])[:2]
entry = state.setdefault(unit, {{"active": False, "enabled": False}})
rc = 0
if verb == "show":
    print("LoadState=" + ("loaded" if (units / unit).is_file() else "not-found"))
    print("ActiveState=" + ("active" if entry["active"] else "inactive"))
elif verb == "is-enabled":
    print("enabled" if entry["enabled"] else "disabled")
    rc = 0 if entry["enabled"] else 1
elif verb in ("start", "reload", "restart", "stop"):
    entry["active"] = verb != "stop"
elif verb in ("enable", "disable"):
    entry["enabled"] = verb == "enable"
state_path.write_text(json.dumps(state))
sys.exit(rc)
"""


def apply_firewall(
    tmp_path: Path, root: Path, enabled: bool, managed: bool = True
) -> tuple[list[str], int]:
    """Run the role's firewall tasks; returns this run's systemctl calls and changed tasks."""
    bin_dir, state = tmp_path / "bin", tmp_path / "systemctl.json"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
    (bin_dir / "systemctl").chmod(0o755)
    layout = Layout.at(root)
    for directory in (layout.etc, layout.systemd):
        directory.mkdir(parents=True, exist_ok=True)
    variables = {
        "sparkplane_root": str(root), "sparkplane_bundle_dir": str(REPO),
        "sparkplane_firewall_enabled": enabled,
        "sparkplane_manage_system": managed,  # as on `/` with --systemd; the root stays a temp dir
    }  # fmt: skip
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
           "FAKE_SYSTEMCTL_STATE": str(state),
           "FAKE_SYSTEMCTL_UNITS": str(layout.systemd)}  # fmt: skip
    log = Path(f"{state}.log")
    before = log.read_text() if log.exists() else ""
    result = run_role_tasks(tmp_path, ["firewall.yml"], variables, env=env)
    changed = re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", result.stdout)
    assert changed is not None, result.stdout
    calls = (log.read_text() if log.exists() else "")[len(before) :]
    return calls.splitlines(), int(changed.group(1))


def unit_state(tmp_path: Path) -> dict[str, bool]:
    return json.loads((tmp_path / "systemctl.json").read_text())[FIREWALL]


def test_turning_the_firewall_off_stops_and_disables_its_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    layout = Layout.at(root)
    rules, unit = layout.etc / "nftables.conf", layout.systemd / FIREWALL

    calls, _ = apply_firewall(tmp_path, root, enabled=True)
    assert rules.is_file() and unit.is_file()
    assert f"start {FIREWALL}" in calls and f"enable {FIREWALL}" in calls
    assert unit_state(tmp_path) == {"active": True, "enabled": True}

    calls, _ = apply_firewall(tmp_path, root, enabled=False)
    # Stopping the unit runs its ExecStop, which unloads the rules; nothing loads them at boot.
    assert f"stop {FIREWALL}" in calls and f"disable {FIREWALL}" in calls
    assert unit_state(tmp_path) == {"active": False, "enabled": False}
    assert not rules.exists() and not unit.exists()
    assert calls[-1] == "daemon-reload"  # systemd forgets the removed unit

    calls, changed = apply_firewall(tmp_path, root, enabled=False)  # idempotent
    assert changed == 0 and not [call for call in calls if call.endswith(FIREWALL)]

    calls, _ = apply_firewall(tmp_path, root, enabled=True)  # and back on
    assert rules.is_file() and unit.is_file()
    assert unit_state(tmp_path) == {"active": True, "enabled": True}


def test_without_system_changes_the_firewall_off_only_removes_its_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    layout = Layout.at(root)
    apply_firewall(tmp_path, root, enabled=True, managed=False)
    assert (layout.etc / "nftables.conf").is_file()
    assert apply_firewall(tmp_path, root, enabled=False, managed=False)[0] == []  # no systemctl
    assert not (layout.etc / "nftables.conf").exists()
    assert not (layout.systemd / FIREWALL).exists()
