"""Finding 9: one rule for a key's lifetime, whoever creates the key: 1 to 3650 days, or never
(issue 17). `--expires 0` used to make a key that never expires, `-1` one already expired."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controlplane.tenancy.models import KEY_EXPIRY_RULE
from tests.controlplane.cli.test_tenants import sparkplane
from tests.controlplane.console.client import ConsoleClient
from tests.controlplane.console.server import ConsoleServer
from tests.controlplane.harness import ThreadGateway, make_settings
from tests.enginesim import SimHandle, start_simulator

BAD = ["0", "-1", "3651", "1.5", "soon", "²"]  # "²" is a digit to str.isdigit, not to int()
# What a JSON client may send as `expires_days` that is not a whole number of days in range.
BAD_JSON = [0, -1, 3651, 1.5, 3651.0, "soon", "30", True, False, [30], {"days": 30}]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadGateway]:
    engine: SimHandle = start_simulator(time_scale=0.01, models="sim-model")
    running = ThreadGateway(make_settings(tmp_path_factory.mktemp("keys"), [engine.url]))
    with running.admin() as admin:
        assert admin.post("/api/tenants", json={"name": "acme"}).status_code == 201
    yield running
    running.stop()
    engine.stop()


@pytest.mark.parametrize("days", BAD)
def test_the_cli_refuses_a_lifetime_outside_the_rule(tmp_path: Path, days: str) -> None:
    assert sparkplane(tmp_path, "tenants", "create", "acme").returncode == 0
    created = sparkplane(tmp_path, "keys", "create", "--tenant", "acme", "--expires", days)
    assert created.returncode != 0, created.stdout
    assert KEY_EXPIRY_RULE in created.stderr
    assert "sk-sp-" not in created.stdout
    listed = sparkplane(tmp_path, "keys", "list", "--tenant", "acme")
    assert "acme" not in listed.stdout  # no key was made


def test_the_cli_makes_a_key_that_never_expires_only_when_told(tmp_path: Path) -> None:
    assert sparkplane(tmp_path, "tenants", "create", "acme").returncode == 0
    for args in (["--expires", "never"], []):
        created = sparkplane(tmp_path, "keys", "create", "--tenant", "acme", *args)
        assert created.returncode == 0, created.stderr
    created = sparkplane(tmp_path, "keys", "create", "--tenant", "acme", "--expires", "3650")
    assert created.returncode == 0, created.stderr
    listed = sparkplane(tmp_path, "keys", "list", "--tenant", "acme").stdout
    assert listed.count("expires=never") == 2 and listed.count("active") == 3


@pytest.mark.parametrize("days", BAD_JSON, ids=repr)
def test_the_admin_api_refuses_a_lifetime_outside_the_rule(api: ThreadGateway, days: Any) -> None:
    """The CLI's answer, word for word: not pydantic's 422, and `true` is not a 1-day key."""
    with api.admin() as admin:
        keys = len(admin.get("/api/keys", params={"tenant": "acme"}).json())
        response = admin.post("/api/keys", json={"tenant": "acme", "expires_days": days})
        assert len(admin.get("/api/keys", params={"tenant": "acme"}).json()) == keys
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "message": f"expires_days: {KEY_EXPIRY_RULE}",
        "type": "invalid_request_error",
        "param": "expires_days",
        "code": "invalid_expiry",
    }


def test_the_admin_api_takes_null_as_never(api: ThreadGateway) -> None:
    with api.admin() as admin:
        response = admin.post("/api/keys", json={"tenant": "acme", "expires_days": None})
        assert response.status_code == 201, response.text
        assert response.json()["expires_at"] is None
        response = admin.post("/api/keys", json={"tenant": "acme", "expires_days": 1})
        assert response.status_code == 201, response.text
        assert response.json()["expires_at"] is not None


def test_the_admin_api_takes_30_0_as_30_days(api: ThreadGateway) -> None:
    """A whole number, as JSON Schema's "integer" (the API's OpenAPI document) counts it."""
    with api.admin() as admin:
        response = admin.post("/api/keys", json={"tenant": "acme", "expires_days": 30.0})
        assert response.status_code == 201, response.text
        created, expires = (response.json()[k] for k in ("created_at", "expires_at"))
        lifetime = datetime.fromisoformat(expires) - datetime.fromisoformat(created)
        assert round(lifetime / timedelta(days=1)) == 30


@pytest.fixture
def admin(server: ConsoleServer) -> Iterator[ConsoleClient]:
    name, password = server.add_user("admin")
    client = ConsoleClient(server.url)
    assert client.signin(name, password).status_code == 303
    yield client
    client.close()


@pytest.mark.parametrize("days", BAD)
def test_the_console_refuses_a_lifetime_outside_the_rule(
    server: ConsoleServer, admin: ConsoleClient, days: str
) -> None:
    tenant = server.unique("expiry-")
    assert admin.post("/tenants", {"name": tenant}).status_code == 303
    page = f"/tenants/{tenant}"
    response = admin.post(page + "/keys", {"key_name": "k", "expires_days": days}, page=page)
    assert response.status_code == 400, response.text
    assert KEY_EXPIRY_RULE in response.text.replace("&#39;", "'")
    assert 'id="new-key-value"' not in response.text
