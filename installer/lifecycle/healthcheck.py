"""The upgrade's health check: `sparkplane validate --quick` through the new release.

1. Wait until the engine's `/health` and the control plane's `/readyz` answer 200.
2. Run `validate --quick` (lifecycle/validate.py) through the control plane with the system
   tenant's key: every functional check must pass (a slow figure only warns).

Every call is an ordinary API call of the system tenant, so the upgrade's proof of life is in
the audit chain, and the report's hash too. Any failure raises HealthCheckError naming the
failed checks and the report, and `installer.lifecycle.upgrade.upgrade` rolls back.
"""

from __future__ import annotations

import time
from typing import Any

from controlplane.appliance.layout import Layout
from installer.lifecycle.status import appliance_status
from installer.lifecycle.validate import ValidateError, ValidateResult, run_validate
from installer.provision.system_tenant import SYSTEM_TENANT

HEALTH_TENANT = SYSTEM_TENANT


class HealthCheckError(RuntimeError):
    """The appliance is not healthy; the message names the step and what it answered."""


def wait_ready(layout: Layout, timeout: float, interval: float = 2.0) -> dict[str, Any]:
    """Block until engine /health and control plane /readyz answer; returns the status."""
    deadline = time.monotonic() + timeout
    while True:
        status = appliance_status(layout.root)
        engine = status.get("engine", {}).get("health")
        ready = status.get("controlplane", {}).get("ready")
        if engine == "ok" and ready == "ok":
            return status
        if time.monotonic() > deadline:
            raise HealthCheckError(
                f"not healthy after {timeout:.0f}s: engine {engine}, control plane {ready}"
            )
        time.sleep(interval)


def check_health(layout: Layout, timeout: float = 900.0, interval: float = 2.0) -> ValidateResult:
    """Steps 1-2 of the module docstring; raises HealthCheckError on any failure."""
    wait_ready(layout, timeout, interval)
    try:
        result = run_validate(layout.root, quick=True)
    except ValidateError as exc:
        raise HealthCheckError(f"validate --quick could not run: {exc}") from exc
    failed = [check for check in result.report["checks"] if not check["passed"]]
    if failed:
        said = "; ".join(f"{check['name']}: {check['detail']}" for check in failed)
        raise HealthCheckError(f"validate --quick failed ({result.json_path}): {said}")
    return result
