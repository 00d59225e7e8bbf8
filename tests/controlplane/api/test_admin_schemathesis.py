"""schemathesis against the admin API's own OpenAPI document: no 5xx, documented answers only.

(schemathesis' pytest plugin does not run under this pytest version, so each operation's
strategy is driven with hypothesis directly; the checks are schemathesis' own.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.controlplane.harness import ADMIN_TOKEN, ThreadGateway


def admin_operations(gateway: ThreadGateway) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(gateway.url + "/openapi.json")
    schema = schema.include(path_regex="^/api/")
    return [result.ok() for result in schema.get_all_operations()]


def test_admin_api_fuzz(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:  # something to find, list and revoke
        admin.post("/api/tenants", json={"name": "fuzz-target"})
        admin.post("/api/keys", json={"tenant": "fuzz-target"})
    operations = admin_operations(gateway)
    assert len(operations) >= 10, [op.label for op in operations]
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers)

        try:
            run()
        except Exception as exc:
            pytest.fail(f"{operation.label}: {exc}")
