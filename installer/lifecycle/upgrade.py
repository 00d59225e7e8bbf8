"""Upgrade, rollback and uninstall over side-by-side releases and the atomic `current` link.

Upgrade: build the new release beside the running one (nothing in /etc changes) with the running
release's settings and profile, back up the control-plane data, activate (config + switch),
health-check, and on failure stop the control plane, restore the data and re-apply the previous
release. Rollback re-runs a kept release's own playbooks with the
variables it was installed with, so it needs neither the old media nor the network.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from controlplane.appliance.events import record_event
from controlplane.appliance.layout import Layout
from installer.lifecycle import units
from installer.provision.activation import Aftermath, after_activation, import_events_or_warn, show
from installer.provision.apply import RELEASE_VARS, InstallError, raise_for_run, site_vars_in
from installer.provision.install import InstallResult, install
from installer.provision.lock import installer_lock
from installer.provision.runner import run_playbook

HealthCheck = Callable[[Layout], None]  # raises on an unhealthy appliance


def backup_data(layout: Layout, label: str) -> Path:
    """Copy the control-plane data dir; SQLite files through the online backup API."""
    dest = layout.backups / f"{label}-{time.strftime('%Y%m%dT%H%M%S')}"
    dest.mkdir(parents=True, mode=0o700)
    source = layout.controlplane_data
    for path in sorted(source.rglob("*")) if source.is_dir() else []:
        target = dest / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".db":
            with sqlite3.connect(path) as src, sqlite3.connect(target) as dst:
                src.backup(dst)
            shutil.copymode(path, target)
        elif not path.name.endswith(("-wal", "-shm", "-journal")):
            shutil.copy2(path, target)
    return dest


def restore_data(layout: Layout, backup: Path) -> None:
    """Put the backup back as the data directory with the owner and mode the service had (the
    backup itself is root's, 0700): the control plane must open it after the rollback."""
    data = layout.controlplane_data
    kept = data.stat() if data.exists() else None
    if data.exists():
        shutil.rmtree(data)
    shutil.copytree(backup, data)
    if kept is None:
        return
    os.chmod(data, stat.S_IMODE(kept.st_mode))
    for directory, subdirs, files in os.walk(data):
        for name in (directory, *(os.path.join(directory, f) for f in subdirs + files)):
            os.chown(name, kept.st_uid, kept.st_gid, follow_symlinks=False)


def reapply_release(layout: Layout, version: str, console: Console | None, action: str) -> int:
    """Run a kept release's playbooks with its saved variables; returns the changed count."""
    release = layout.release(version)
    saved_path = release / RELEASE_VARS
    if not (release / ".complete").is_file() or not saved_path.is_file():
        raise InstallError(f"release {version} is not a complete release under {layout.releases}")
    saved = json.loads(saved_path.read_text())
    extravars = dict(saved["extravars"])
    # Everything comes from the release itself; the model is already in place.
    extravars |= {"sparkplane_bundle_dir": str(release), "sparkplane_activate": True}
    extravars["sparkplane_model_source_dir"] = ""
    extravars["sparkplane_draft_model_source_dir"] = ""
    ident = f"{action}-{version}-{time.strftime('%Y%m%dT%H%M%S')}"
    result = run_playbook(
        release / "playbooks",
        layout.artifacts,
        saved["inventory"],
        extravars,
        ident=ident,
        console=console,
    )
    raise_for_run(result, f"{action} to {version}")
    return result.changed


def previous_version(layout: Layout) -> str | None:
    active = layout.active_version()
    others = [v for v in layout.installed_versions() if v != active]
    return others[-1] if others else None


def rollback(root: Path, to: str | None = None, console: Console | None = None) -> str:
    """Make `to` (default: the release installed before the current one) current again."""
    layout = Layout.at(root)
    active = layout.active_version()
    target = to or previous_version(layout)
    if target is None:
        raise InstallError("no earlier complete release to roll back to")
    if target == active:
        raise InstallError(f"release {target} is already current")
    with installer_lock(layout):
        record_event(layout, "rollback", phase="started", version=target, previous=active)
        reapply_release(layout, target, console, "rollback")
        record_event(layout, "rollback", phase="succeeded", version=target, previous=active)
        after_activation(layout, create_admin=False, console=console)
    return target


def running_settings(layout: Layout, version: str) -> tuple[dict[str, Any], str]:
    """The install options and profile a release was installed with: an upgrade keeps them."""
    saved = json.loads((layout.release(version) / RELEASE_VARS).read_text())
    host = saved["inventory"]["sparkplane"]["hosts"]["localhost"]
    options = {
        "engine_port": host["sparkplane_engine_port"],
        "controlplane_port": host["sparkplane_controlplane_port"],
        "controlplane_bind": host["sparkplane_controlplane_bind"],
        "allow_system_changes": host["sparkplane_allow_system_changes"] is True,
        "site_vars": site_vars_in(host),
    }
    return options, str(saved["extravars"]["sparkplane_engine_profile"])


def upgrade(
    bundle: Path,
    root: Path,
    trusted_keys: Sequence[Ed25519PublicKey],
    profile: str | None = None,
    *,
    health_check: HealthCheck | None = None,
    console: Console | None = None,
    **install_options: Any,
) -> InstallResult:
    """Install `bundle` beside the current release, switch, health-check, roll back on failure.

    Every setting of the running release (ports, bind address, --systemd, the site's inventory
    variables) and its profile are kept unless given here.
    """
    layout = Layout.at(root)
    previous = layout.active_version()
    if previous is None:
        raise InstallError(f"nothing is installed under {root}; use install")
    running, running_profile = running_settings(layout, previous)
    install_options = running | install_options
    with installer_lock(layout):
        staged = install(
            bundle,
            root,
            trusted_keys,
            profile or running_profile,
            activate=False,
            console=console,
            action="upgrade",
            **install_options,
        )
        if staged.version == previous:
            raise InstallError(f"release {previous} is already current; nothing to upgrade")
        backup = backup_data(layout, previous)
        record_event(
            layout, "upgrade", phase="switching", version=staged.version, backup=str(backup)
        )
        try:
            changed = reapply_release(layout, staged.version, console, "upgrade")
            if health_check is not None:
                health_check(layout)
        except Exception as exc:
            record_event(
                layout, "upgrade", phase="rolling_back", version=staged.version, error=str(exc)
            )
            # The data goes back before the previous release starts on it: stop the control
            # plane first, restore (owner and modes kept), then re-apply, which starts it.
            details = [str(exc)]
            try:
                units.stop(layout, units.CONTROLPLANE)
            except units.UnitError as stop_error:  # the rollback must go on regardless
                details.append(f"while rolling back: {stop_error}")
            restore_data(layout, backup)
            reapply_release(layout, previous, console, "rollback")
            record_event(
                layout, "upgrade", phase="rolled_back", version=staged.version, current=previous
            )
            after_activation(layout, create_admin=False, console=console)
            raise InstallError(
                f"upgrade to {staged.version} failed its health check; rolled back to {previous}",
                details,
            ) from exc
        record_event(
            layout, "upgrade", phase="succeeded", version=staged.version, previous=previous
        )
        aftermath = after_activation(layout, create_admin=False, console=console)
        return InstallResult(
            **{
                **staged.__dict__,
                "changed": staged.changed + changed,
                "audit_imported": aftermath.audit_imported,
                "warnings": tuple(aftermath.warnings),
            }
        )


def _make_writable(path: Path) -> None:
    """Models are read-only; removing them as a non-root installer needs write bits back."""
    for directory, _, _ in os.walk(path):
        os.chmod(directory, 0o700)


def uninstall(root: Path, purge: bool = False, console: Console | None = None) -> list[Path]:
    """Remove what install laid out; data, audit keys, backups and trust stay unless `purge`.

    The audit chain gets the "started" event now, through the release about to be removed; the
    "succeeded" line stays in events.jsonl for the next install to import (with `purge` the
    chain itself goes, so there is nothing to import into).
    """
    layout = Layout.at(root)
    removed = [layout.current, layout.releases, layout.models, layout.engine_state]
    removed += [layout.systemd / unit for unit in units.ALL_UNITS]
    removed += [
        layout.etc / name
        for name in ("engine.env", "engine.args", "controlplane.env", "nftables.conf")
    ]
    if purge:
        removed += [layout.opt, layout.var, layout.etc]
    else:
        record_event(layout, "uninstall", phase="started", purge=False)
        aftermath = Aftermath()
        if layout.active_version() is not None:
            import_events_or_warn(layout, aftermath)
        if console is not None:
            show(aftermath, console)
    # Before the files go: the services stop and leave the boot, the firewall rules unload.
    managed = units.disable_and_stop(layout)
    gone = []
    for path in removed:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            _make_writable(path)
            shutil.rmtree(path)
        else:
            continue
        gone.append(path)
    if managed:
        units.systemctl("daemon-reload")
    if not purge:
        record_event(layout, "uninstall", phase="succeeded", removed=[str(p) for p in gone])
    return gone
