"""Finding 5, every credential: an address past its allowance of refused credentials is answered
429 on /v1, /api and /metrics alike, before its credential is checked, whichever credential it
was refused. Failed before the fix: blocked on /v1, the address still read /api/tenants with the
admin token (200) and /metrics with the scrape token (200)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.controlplane.conftest import new_tenant
from tests.controlplane.harness import ADMIN_TOKEN, METRICS_TOKEN, ThreadGateway
from tests.security.conftest import new_address

WRONG = "sk-sp-madeup-blocked-" + "z" * 20
# Where a credential is checked: (path, a wrong credential for it).
CHECKS = {"/v1/models": WRONG, "/api/tenants": "wrong-admin-token",
          "/metrics": "wrong-scrape-token"}  # fmt: skip


@pytest.fixture(scope="module")
def valid_key(gateway: ThreadGateway) -> str:
    with gateway.admin() as admin:
        return new_tenant(admin, "blocked-address")


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A client from an address of its own, so each test blocks only itself."""
    transport = httpx.HTTPTransport(local_address=new_address())
    with httpx.Client(transport=transport, timeout=30) as from_one_address:
        yield from_one_address


def get(client: httpx.Client, gateway: ThreadGateway, path: str, token: str) -> httpx.Response:
    return client.get(gateway.url + path, headers={"Authorization": f"Bearer {token}"})


def block(client: httpx.Client, gateway: ThreadGateway, path: str) -> httpx.Response:
    """Spend the address's allowance on wrong credentials at `path`; the answer past it."""
    allowance = gateway.settings.auth_failures_per_address
    statuses = [get(client, gateway, path, CHECKS[path]).status_code for _ in range(allowance)]
    assert statuses == [401] * allowance, statuses
    blocked = get(client, gateway, path, CHECKS[path])
    assert blocked.status_code == 429, blocked.text
    return blocked


def assert_blocked(response: httpx.Response, like: httpx.Response) -> None:
    """429 in the one error shape, with the code and type of the /v1 answer and a Retry-After."""
    assert response.status_code == 429, f"{response.request.url.path}: {response.text}"
    error, expected = response.json()["error"], like.json()["error"]
    assert error["code"] == expected["code"] == "too_many_auth_failures", error
    assert (error["type"], error["param"]) == (expected["type"], expected["param"]), error
    assert int(response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("refused_at", list(CHECKS))
def test_a_blocked_address_is_refused_before_any_credential_is_checked(
    gateway: ThreadGateway, valid_key: str, client: httpx.Client, refused_at: str
) -> None:
    blocked = block(client, gateway, refused_at)
    valid = {"/v1/models": valid_key, "/api/tenants": ADMIN_TOKEN, "/metrics": METRICS_TOKEN}
    for path, token in valid.items():
        assert_blocked(get(client, gateway, path, token), like=blocked)
    for path in CHECKS:  # no credential at all: 429 as well, not 401
        assert_blocked(client.get(gateway.url + path), like=blocked)
    with gateway.admin() as admin:  # the block is the address's, not the token's
        assert admin.get("/api/tenants").status_code == 200
