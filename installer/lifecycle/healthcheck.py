"""The upgrade's health check: engine and control plane answer, and one audited completion passes.

1. Wait until the engine's `/health` and the control plane's `/readyz` answer 200.
2. Through the installed release's own CLI (provision/release_cli.py), make sure the internal
   tenant `sparkplane-healthcheck` exists (concurrency 1, max_tokens 1, only the served model)
   and give it a key that expires in a day.
3. Send one 1-token chat completion to the control plane's `/v1/chat/completions` with that key,
   over HTTPS pinned to the local certificate when the control plane serves HTTPS.
4. Revoke every active key of the tenant, whatever happened (an earlier run killed half-way
   leaves none behind either).

The completion is an ordinary API call, so it is audited under that tenant: the upgrade's proof
of life is in the audit chain. Any failure raises HealthCheckError saying which step failed, and
`installer.lifecycle.upgrade.upgrade` rolls back.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

from controlplane.appliance.layout import Layout, read_env_file
from installer.lifecycle.loopback import controlplane_loopback
from installer.lifecycle.status import appliance_status
from installer.provision.release_cli import ReleaseCliError, run_release_cli

HEALTH_TENANT = "sparkplane-healthcheck"
KEY_LABEL = "upgrade health check"


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


def _cli(layout: Layout, step: str, *args: str) -> str:
    """The release CLI's stdout; its failure becomes a HealthCheckError naming the step."""
    try:
        return run_release_cli(layout, *args).stdout
    except ReleaseCliError as exc:
        raise HealthCheckError(f"{step}: {exc}") from exc


def ensure_tenant(layout: Layout, model: str) -> None:
    """Create the internal tenant, or re-enable it / point it at the model now served."""
    step = f"health-check tenant {HEALTH_TENANT}"
    for line in _cli(layout, step, "tenants", "list").splitlines():
        fields = line.split("\t")
        if fields[0] != HEALTH_TENANT:
            continue
        if fields[1] != "enabled" or fields[-1] != f"models={model}":
            _cli(layout, step, "tenants", "update", HEALTH_TENANT, "--enable", "--models", model)
        return
    limits = ["--max-concurrency", "1", "--max-tokens", "1", "--models", model]
    _cli(layout, step, "tenants", "create", HEALTH_TENANT, *limits)


def create_key(layout: Layout) -> str:
    """A key of the internal tenant; `keys create` prints it alone on its last line."""
    args = ["--tenant", HEALTH_TENANT, "--expires", "1", "--name", KEY_LABEL]
    said = _cli(layout, "health-check key", "keys", "create", *args)
    lines = said.strip().splitlines()
    if not lines or len(lines[-1].split()) != 1:
        raise HealthCheckError(f"health-check key: the installed sparkplane printed none: {said!r}")
    return lines[-1]


def revoke_keys(layout: Layout) -> list[int]:
    """Revoke every active key of the internal tenant; returns their ids."""
    step = "the health-check key was not revoked"
    listed = _cli(layout, step, "keys", "list", "--tenant", HEALTH_TENANT)
    keys = [line.split("\t") for line in listed.splitlines()]
    ids = [int(fields[0]) for fields in keys if fields[3:4] == ["active"]]
    for key_id in ids:
        _cli(layout, step, "keys", "revoke", str(key_id))
    return ids


def _error_of(exc: urllib.error.HTTPError) -> str:
    """The OpenAI-shaped error's message, else the start of the body."""
    body = exc.read().decode("utf-8", "replace")
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200]


def complete_once(
    url: str, context: ssl.SSLContext | None, key: str, model: str, timeout: float = 120.0
) -> str:
    """One 1-token chat completion through the control plane; returns the text."""
    if not url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
        raise ValueError(f"the health check talks to the control plane on loopback, not {url}")
    body = {"model": model, "max_tokens": 1, "temperature": 0}
    body["messages"] = [{"role": "user", "content": "ping"}]
    request = urllib.request.Request(  # noqa: S310 - checked above: loopback
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    where = f"completion through the control plane ({url})"
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise HealthCheckError(f"{where} failed: HTTP {exc.code}: {_error_of(exc)}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise HealthCheckError(f"{where} failed: {getattr(exc, 'reason', exc)}") from exc
    if not answer.get("choices"):
        raise HealthCheckError(f"{where} answered without choices: {answer}")
    return str(answer["choices"][0].get("message", {}).get("content", ""))


def check_health(layout: Layout, timeout: float = 900.0, interval: float = 2.0) -> None:
    """Steps 1-4 of the module docstring; raises HealthCheckError on any failure."""
    status = wait_ready(layout, timeout, interval)
    model = str(status["model"]["served_name"])
    url, context = controlplane_loopback(read_env_file(layout.controlplane_env))
    ensure_tenant(layout, model)
    failure: Exception | None = None
    try:
        complete_once(url, context, create_key(layout), model)
    except Exception as exc:
        failure = exc
        raise
    finally:
        _revoke_or_raise(layout, failure)


def _revoke_or_raise(layout: Layout, failure: Exception | None) -> None:
    """Revoke; if that fails after another failure, say both (the first is not lost)."""
    try:
        revoke_keys(layout)
    except HealthCheckError as exc:
        if failure is None:
            raise
        raise HealthCheckError(f"{failure}; and {exc}") from exc
