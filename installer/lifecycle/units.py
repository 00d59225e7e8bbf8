"""systemctl for the lifecycle steps the playbooks do not cover: stop before a restore, and the
end of the units and firewall rules on uninstall.

Only ever on a root that the installed release manages (`/` with --systemd, see
`installer.provision.release_cli.manages_system`); elsewhere every function does nothing.
"""

from __future__ import annotations

import subprocess

from controlplane.appliance.layout import Layout
from installer.provision.apply import InstallError
from installer.provision.release_cli import manages_system

ENGINE = "sparkplane-engine.service"
CONTROLPLANE = "sparkplane-controlplane.service"
FIREWALL = "sparkplane-firewall.service"  # loads nftables.conf at boot, unloads it on stop
UNITS = (ENGINE, CONTROLPLANE)
ALL_UNITS = (*UNITS, FIREWALL)


class UnitError(InstallError):
    """systemctl refused; the message has its own words."""


def systemctl(*args: str) -> None:
    done = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise UnitError(f"systemctl {' '.join(args)}: {said[-1] if said else done.returncode}")


def stop(layout: Layout, *units: str) -> bool:
    """Stop `units` (a restore must not replace the data under a running control plane)."""
    if not manages_system(layout):
        return False
    systemctl("stop", *units)
    return True


def disable_and_stop(layout: Layout) -> bool:
    """Stop and disable every unit (the firewall unit unloads its rules when it stops)."""
    if not manages_system(layout):
        return False
    # Units that were never installed (an older release had no firewall unit) are skipped.
    present = [unit for unit in ALL_UNITS if (layout.systemd / unit).is_file()]
    if present:
        systemctl("disable", "--now", *present)
    return True
