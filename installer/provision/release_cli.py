"""Running the installed release's own `sparkplane` CLI after a lifecycle step.

The installer process may be a different version from the release it just activated (an upgrade
is driven by the new media, a rollback by whatever is at hand), so steps that touch the control
plane's database go through `ROOT/opt/sparkplane/current/controlplane-venv/bin/sparkplane`, with
exactly the settings the service runs with (`controlplane.env`) and, on a real root managed with
`--systemd`, as the service user so that every file it creates stays the service's.

Two steps use it: importing the installer's lifecycle events into the audit chain (every run)
and creating the first console admin (first install only).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlplane.appliance.layout import Layout, read_env_file
from controlplane.core.security import write_private_file
from installer.provision.apply import RELEASE_VARS

if TYPE_CHECKING:
    import pwd

DEFAULT_SERVICE_USER = "sparkplane"  # sparkplane_user in playbooks/group_vars/all.yml
TIMEOUT_SECONDS = 300
FIRST_ADMIN = "admin"
IMPORTED = re.compile(r"^imported (\d+) installer events \((\d+) already present\)$", re.M)
CREATED = f"created console user '{FIRST_ADMIN}'"


class ReleaseCliError(RuntimeError):
    """The installed CLI failed or did not answer as expected; the message says what it said."""


@dataclass(frozen=True)
class FirstAdmin:
    username: str
    password: str
    stored_at: Path


def saved_host_vars(layout: Layout) -> dict[str, Any]:
    """The inventory variables the current release (else the newest kept one) was applied with,
    from its install-vars.json; empty when no release has one."""
    candidates = [layout.current / RELEASE_VARS]
    candidates += [layout.release(v) / RELEASE_VARS for v in reversed(layout.installed_versions())]
    saved = next((path for path in candidates if path.is_file()), None)
    if saved is None:
        return {}
    hosts = json.loads(saved.read_text())["inventory"]["sparkplane"]["hosts"]
    return dict(next(iter(hosts.values()), {}))  # one host: install's local inventory


def manages_system(layout: Layout) -> bool:
    """Whether the current release (else any kept one) was installed on `/` with --systemd:
    only then may the installer touch systemd, users and nftables."""
    if layout.root != Path("/"):
        return False
    return saved_host_vars(layout).get("sparkplane_allow_system_changes") is True


def service_user(layout: Layout) -> str | None:
    """The units' account (the site's `sparkplane_user`) when the current release manages a real
    system (`/` + --systemd); the layout role created it there."""
    if not manages_system(layout):
        return None
    return str(saved_host_vars(layout).get("sparkplane_user") or DEFAULT_SERVICE_USER)


def service_account(user: str) -> pwd.struct_passwd:
    """The user's passwd entry; a clear error (not a KeyError) when the host has no such user."""
    import pwd  # POSIX-only; only needed on a real root

    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise ReleaseCliError(
            f"the service user {user!r} (sparkplane_user) does not exist on this host; "
            "run the install again with --systemd to create it"
        ) from None


def run_release_cli(layout: Layout, *args: str) -> subprocess.CompletedProcess[str]:
    """`<current>/controlplane-venv/bin/sparkplane ARGS` with controlplane.env as environment."""
    program = layout.current / "controlplane-venv" / "bin" / "sparkplane"
    if not program.is_file():
        raise ReleaseCliError(f"{program} does not exist: no current release to run it from")
    user = service_user(layout)
    # Looked up here: subprocess would raise a bare KeyError for a missing user or group.
    group = service_account(user).pw_gid if user is not None else None
    # A clean environment: the installer's own SPARKPLANE_* must not redirect the release.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    env |= read_env_file(layout.controlplane_env)
    try:
        done = subprocess.run(
            [str(program), *args],
            env=env,
            cwd=layout.root,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            user=user,
            group=group,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReleaseCliError(f"sparkplane {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise ReleaseCliError(
            f"sparkplane {' '.join(args)} exited {done.returncode}: {said[-1] if said else ''}"
        )
    return done


@contextmanager
def readable_copy(path: Path, user: str | None) -> Iterator[Path]:
    """The events file as the service user can read it (the original is root's, 0640)."""
    if user is None:
        yield path
        return
    entry = service_account(user)
    with tempfile.TemporaryDirectory(prefix="sparkplane-events-") as tmp:
        copy = Path(tmp) / path.name
        copy.write_bytes(path.read_bytes())  # same bytes, so the same event ids
        for item in (Path(tmp), copy):
            os.chown(item, entry.pw_uid, entry.pw_gid)
        yield copy


def import_lifecycle_events(layout: Layout) -> tuple[int, int]:
    """Import events.jsonl into the audit chain; returns (imported, already present)."""
    if not layout.events.is_file():
        return 0, 0
    with readable_copy(layout.events, service_user(layout)) as events:
        done = run_release_cli(layout, "audit", "import-installer-events", str(events))
    found = IMPORTED.search(done.stdout)
    if found is None:
        said = done.stdout.strip()
        raise ReleaseCliError(f"the installed sparkplane did not confirm the import: {said!r}")
    return int(found.group(1)), int(found.group(2))


def admin_exists(layout: Layout) -> bool:
    """Any console user with the admin role (`admins list`: name, role, state per line)."""
    listed = run_release_cli(layout, "admins", "list").stdout
    return any(line.split("\t")[1:2] == ["admin"] for line in listed.splitlines())


def create_first_admin(layout: Layout) -> FirstAdmin | None:
    """Create `admin` with a one-time password stored 0600, unless an admin exists already.

    The installer stores the password itself (not the CLI's --out): on a real root the CLI runs
    as the service user, which must not be able to write /etc/sparkplane.
    """
    if admin_exists(layout):
        return None
    done = run_release_cli(layout, "admins", "create", FIRST_ADMIN, "--role", "admin")
    lines = done.stdout.strip().splitlines()
    if CREATED not in lines or len(lines[-1].split()) != 1:
        said = done.stdout.strip()
        raise ReleaseCliError(f"the installed sparkplane did not create the admin: {said!r}")
    stored_at = layout.etc / "initial-admin-password"
    write_private_file(stored_at, (lines[-1] + "\n").encode())
    return FirstAdmin(FIRST_ADMIN, lines[-1], stored_at)
