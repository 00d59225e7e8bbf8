"""Issue 17, finding 10: the admin API token had every right. Tokens now have a role (admin or
auditor: an auditor token reads, never changes), and `sparkplane admin-token rotate` writes a
new token after which the old one fails on the very next request, on every replica. Failed
before the fix (no such command; the one token could do everything)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from controlplane.api.admin_tokens import PREFIX_LENGTH as PREFIX
from controlplane.audit.models import AuditEntry
from controlplane.console.queries import entry_data
from tests.controlplane.harness import ADMIN_TOKEN, ThreadGateway, make_settings
from tests.enginesim import SimHandle, start_simulator
from tests.security.conftest import PG_URL, postgres_schema


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator(max_num_seqs=4, time_scale=0.01)
    yield handle
    handle.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def pair(
    request: pytest.FixtureRequest, sim: SimHandle, tmp_path: Path
) -> Iterator[tuple[list[ThreadGateway], dict[str, str]]]:
    """Two gateways on one database, and the environment the CLI runs with."""
    admin = None
    if request.param == "postgresql":
        admin, schema = postgres_schema()
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    data = tmp_path / "data"
    gateways = [ThreadGateway(make_settings(data, [sim.url], database_url=url)) for _ in (1, 2)]
    env = {"SPARKPLANE_DATA_DIR": str(data), "SPARKPLANE_DATABASE_URL": url,
           "SPARKPLANE_ADMIN_TOKEN": ADMIN_TOKEN}  # fmt: skip
    yield gateways, env
    for gateway in gateways:
        gateway.stop()
    if admin is not None:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def _rotate(env: dict[str, str], *args: str) -> str:
    from installer.cli.main import build_app

    app = build_app(["controlplane.cli.admin_tokens"])
    result = CliRunner().invoke(app, ["admin-token", "rotate", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def _list(env: dict[str, str]) -> list[list[str]]:
    from installer.cli.main import build_app

    app = build_app(["controlplane.cli.admin_tokens"])
    result = CliRunner().invoke(app, ["admin-token", "list"], env=env)
    assert result.exit_code == 0, result.output
    return [line.split("\t") for line in result.output.strip().splitlines()]


def _rotations(gateway: ThreadGateway) -> list[dict[str, object]]:
    with gateway.app.state.sessions() as db:
        query = select(AuditEntry).where(AuditEntry.kind == "admin.admin_token_rotate")
        return [entry_data(entry) for entry in db.scalars(query.order_by(AuditEntry.seq))]


def _call(gateway: ThreadGateway, token: str, method: str = "GET", name: str = "") -> int:
    headers = {"Authorization": f"Bearer {token}"}
    path, body = ("/api/tenants", {"name": name}) if method == "POST" else ("/api/tenants", None)
    return httpx.request(method, gateway.url + path, headers=headers, json=body).status_code


def test_auditor_tokens_read_and_rotation_retires_the_old_token_everywhere(
    pair: tuple[list[ThreadGateway], dict[str, str]],
) -> None:
    (one, two), env = pair
    assert _call(one, ADMIN_TOKEN, "POST", "before") == 201

    # The configured token is in force, and listed, until a rotation of the default name.
    assert _list(env) == [["SPARKPLANE_ADMIN_TOKEN", "admin", "(setting)…", "-"]]
    auditor = _rotate(env, "--role", "auditor", "--name", "audit-bot")
    assert _call(two, auditor) == 200
    refused = httpx.post(two.url + "/api/tenants", json={"name": "nope"},
                         headers={"Authorization": f"Bearer {auditor}"})  # fmt: skip
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_role_required"

    new_admin = _rotate(env, "--role", "admin")
    for gateway in (one, two):  # the very next request, on either replica
        assert _call(gateway, ADMIN_TOKEN) == 401
    assert _call(two, new_admin, "POST", "after") == 201
    assert _call(one, auditor) == 200  # another name's token is not touched

    newer = _rotate(env, "--role", "admin")
    assert _call(one, new_admin) == 401 and _call(two, new_admin) == 401
    assert _call(one, newer, "POST", "newest") == 201
    listed = _list(env)
    assert [(name, role) for name, role, *_ in listed] == [("admin-token", "admin"),
                                                          ("audit-bot", "auditor")]  # fmt: skip
    assert listed[0][2] == newer[:PREFIX] + "…" and listed[1][2] == auditor[:PREFIX] + "…"
    # Each rotation audited; only the first of the default name retired the setting.
    assert [(e["target"], e["role"], e["prefix"], e["retired_setting"])
            for e in _rotations(one)] == [
        ("audit-bot", "auditor", auditor[:PREFIX], False),
        ("admin-token", "admin", new_admin[:PREFIX], True),
        ("admin-token", "admin", newer[:PREFIX], False),
    ]  # fmt: skip
