"""The appliance's own tenants, made by the installer through the installed release's CLI.

- `sparkplane-system`: the tenant `sparkplane validate` and the upgrade health check call the
  API as. Created with `--system` (audited like any tenant, left out of usage totals and
  capacity shares, never disabled or erased); its key is written 0600 to
  `ROOT/etc/sparkplane/system-tenant.key`, beside the other secrets the installer keeps.
- `sparkplane-system-cap`: a system tenant with one slot and no queue, whose second concurrent
  call must be refused (validate's 429 check). It has no standing key: validate makes one that
  expires in a day for each run and revokes it when done (`probe_key`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from controlplane.appliance.layout import Layout
from controlplane.core.security import write_private_file
from installer.provision.release_cli import ReleaseCliError, run_release_cli

SYSTEM_TENANT = "sparkplane-system"
CAPPED_TENANT = "sparkplane-system-cap"
# Above every profile's engine capacity (32 in the batch, 8 waiting) and validate's 16 streams.
SYSTEM_CONCURRENCY = "64"


def _tenant_names(layout: Layout) -> set[str]:
    listed = run_release_cli(layout, "tenants", "list").stdout
    return {line.split("\t", 1)[0] for line in listed.splitlines()}


def _new_key(layout: Layout, tenant: str, *extra: str) -> str:
    said = run_release_cli(layout, "keys", "create", "--tenant", tenant, *extra).stdout
    lines = said.strip().splitlines()
    if not lines or len(lines[-1].split()) != 1:
        raise ReleaseCliError(f"keys create --tenant {tenant}: no key printed: {said!r}")
    return lines[-1]


def ensure_system_tenant(layout: Layout) -> str:
    """Create the system tenant and its key file unless they exist; returns the key."""
    if SYSTEM_TENANT not in _tenant_names(layout):
        run_release_cli(layout, "tenants", "create", SYSTEM_TENANT, "--system",
                        "--max-concurrency", SYSTEM_CONCURRENCY)  # fmt: skip
    if layout.system_key.is_file():
        return layout.system_key.read_text().strip()
    key = _new_key(layout, SYSTEM_TENANT, "--name", "system tenant (validate, health check)")
    write_private_file(layout.system_key, (key + "\n").encode())
    return key


def revoke_active_keys(layout: Layout, tenant: str) -> list[int]:
    """Revoke every active key of `tenant`; returns their ids."""
    listed = run_release_cli(layout, "keys", "list", "--tenant", tenant).stdout
    ids = [
        int(f[0])
        for f in (line.split("\t") for line in listed.splitlines())
        if f[3:4] == ["active"]
    ]
    for key_id in ids:
        run_release_cli(layout, "keys", "revoke", str(key_id))
    return ids


@contextmanager
def probe_key(layout: Layout) -> Iterator[str]:
    """A day-long key of the capped tenant for one validate run, revoked whatever happens."""
    if CAPPED_TENANT not in _tenant_names(layout):
        run_release_cli(layout, "tenants", "create", CAPPED_TENANT, "--system",
                        "--max-concurrency", "1", "--queue-size", "0")  # fmt: skip
    revoke_active_keys(layout, CAPPED_TENANT)  # a run killed half-way leaves none behind
    try:
        yield _new_key(layout, CAPPED_TENANT, "--expires", "1", "--name", "validate 429 check")
    finally:
        revoke_active_keys(layout, CAPPED_TENANT)
