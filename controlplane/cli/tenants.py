"""`sparkplane tenants ...`, `sparkplane keys ...`.

All commands read the same settings as the server (`--config FILE` plus `SPARKPLANE_*`), so
they work on the server's database. `keys create` prints the new key alone on the last line.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError

from controlplane.audit import AuditUnavailable
from controlplane.cli.options import ConfigOption, settings_or_exit
from controlplane.tenancy import actions
from controlplane.tenancy.models import TenantPublic
from controlplane.tenancy.store import ServiceError

tenants_app = typer.Typer(help="Create, list, change and disable tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke tenant API keys.", no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _guarded(call: Any) -> Any:
    """Turn bad input and refused changes into one clear line on stderr and exit code 1."""
    try:
        return call()
    except ServiceError as exc:
        raise _fail(exc.message) from None
    except AuditUnavailable as exc:  # fail closed: nothing was changed
        raise _fail(f"{exc}; nothing was changed") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise _fail(problems) from None


def _limits(**given: Any) -> dict[str, Any]:
    models = given.pop("models", None)
    limits = {name: value for name, value in given.items() if value is not None}
    if models is not None:
        limits["allowed_models"] = [m.strip() for m in models.split(",") if m.strip()]
    for name in CLEARABLE_LIMITS:
        if limits.get(name) == 0:
            limits[name] = None  # 0 = no limit (clears it on update)
    return limits


def _show_tenant(tenant: TenantPublic) -> None:
    models = ",".join(tenant.allowed_models) or "*"
    state = "disabled" if tenant.disabled else "enabled"
    typer.echo(
        f"{tenant.name}\t{state}\tconcurrency={tenant.max_concurrency}\t"
        f"weight={tenant.weight:g}\trpm={tenant.rpm or '-'}\ttpm={tenant.tpm or '-'}\t"
        f"daily={tenant.daily_tokens or '-'}\tmonthly={tenant.monthly_tokens or '-'}\t"
        f"max_tokens={tenant.max_tokens or '-'}\t"
        f"max_context_tokens={tenant.max_context_tokens or '-'}\tmodels={models}"
    )


MaxConcurrency = Annotated[int | None, typer.Option(help="requests in flight at most")]
Weight = Annotated[float | None, typer.Option(help="share of engine capacity under load")]
CLEARABLE_LIMITS = (
    "rpm",
    "tpm",
    "daily_tokens",
    "monthly_tokens",
    "max_tokens",
    "max_context_tokens",
)
Rpm = Annotated[int | None, typer.Option(help="requests per minute (0: no limit)")]
Tpm = Annotated[int | None, typer.Option(help="tokens per minute (0: no limit)")]
Daily = Annotated[int | None, typer.Option(help="tokens per UTC day (0: no limit)")]
Monthly = Annotated[int | None, typer.Option(help="tokens per UTC month (0: no limit)")]
MaxTokens = Annotated[int | None, typer.Option(help="cap on a request's max_tokens (0: no cap)")]
MaxContextTokens = Annotated[
    int | None, typer.Option(help="cap on a request's prompt + completion tokens (0: no cap)")
]
Models = Annotated[str | None, typer.Option(help="allowed models, comma-separated (empty: all)")]
QueueSize = Annotated[int | None, typer.Option(help="requests that may wait")]
QueueTimeout = Annotated[float | None, typer.Option(help="seconds a request may wait")]


@tenants_app.command("create")
def tenants_create(
    name: str,
    config: ConfigOption = None,
    max_concurrency: MaxConcurrency = None,
    weight: Weight = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    daily_tokens: Daily = None,
    monthly_tokens: Monthly = None,
    max_tokens: MaxTokens = None,
    max_context_tokens: MaxContextTokens = None,
    models: Models = None,
    queue_size: QueueSize = None,
    queue_timeout: QueueTimeout = None,
) -> None:
    """Create a tenant."""
    limits = _limits(
        max_concurrency=max_concurrency,
        weight=weight,
        rpm=rpm,
        tpm=tpm,
        daily_tokens=daily_tokens,
        monthly_tokens=monthly_tokens,
        max_tokens=max_tokens,
        max_context_tokens=max_context_tokens,
        models=models,
        queue_size=queue_size,
        queue_timeout=queue_timeout,
    )
    settings = settings_or_exit(config)
    _show_tenant(_guarded(lambda: actions.create_tenant(settings, name, **limits)))


@tenants_app.command("list")
def tenants_list(config: ConfigOption = None) -> None:
    """List tenants and their limits."""
    for tenant in actions.list_tenants(settings_or_exit(config)):
        _show_tenant(tenant)


@tenants_app.command("update")
def tenants_update(
    name: str,
    config: ConfigOption = None,
    max_concurrency: MaxConcurrency = None,
    weight: Weight = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    daily_tokens: Daily = None,
    monthly_tokens: Monthly = None,
    max_tokens: MaxTokens = None,
    max_context_tokens: MaxContextTokens = None,
    models: Models = None,
    queue_size: QueueSize = None,
    queue_timeout: QueueTimeout = None,
    enable: Annotated[bool, typer.Option(help="enable a disabled tenant")] = False,
) -> None:
    """Change a tenant's limits (only the options given)."""
    changes = _limits(
        max_concurrency=max_concurrency,
        weight=weight,
        rpm=rpm,
        tpm=tpm,
        daily_tokens=daily_tokens,
        monthly_tokens=monthly_tokens,
        max_tokens=max_tokens,
        max_context_tokens=max_context_tokens,
        models=models,
        queue_size=queue_size,
        queue_timeout=queue_timeout,
    )
    if enable:
        changes["disabled"] = False
    if not changes:
        raise _fail("nothing to change: give at least one option")
    settings = settings_or_exit(config)
    _show_tenant(_guarded(lambda: actions.update_tenant(settings, name, **changes)))


@tenants_app.command("disable")
def tenants_disable(name: str, config: ConfigOption = None) -> None:
    """Disable a tenant: its keys stop working on the next request."""
    settings = settings_or_exit(config)
    _show_tenant(_guarded(lambda: actions.update_tenant(settings, name, disabled=True)))


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="the tenant the key belongs to")],
    config: ConfigOption = None,
    expires: Annotated[int | None, typer.Option(help="days until the key expires")] = None,
    name: Annotated[str, typer.Option(help="a label for the key")] = "",
) -> None:
    """Create a key; the key is printed once, alone on the last line."""
    settings = settings_or_exit(config)
    secret = _guarded(lambda: actions.create_key(settings, tenant, expires, name))
    typer.echo(f"created a key for tenant {tenant}; store it now, it is not shown again:")
    typer.echo(secret)


@keys_app.command("list")
def keys_list(
    config: ConfigOption = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
) -> None:
    """List keys (prefix, state, dates; never the secret)."""
    settings = settings_or_exit(config)
    for key in _guarded(lambda: actions.list_keys(settings, tenant)):
        state = "revoked" if key.revoked_at else "active"
        expires = key.expires_at.isoformat() if key.expires_at else "never"
        used = key.last_used_at.isoformat() if key.last_used_at else "never"
        typer.echo(
            f"{key.id}\t{key.tenant}\t{key.prefix}…\t{state}\texpires={expires}\t"
            f"last_used={used}\t{key.name}"
        )


@keys_app.command("revoke")
def keys_revoke(key_id: int, config: ConfigOption = None) -> None:
    """Revoke a key: refused from the next request on, on every replica."""
    settings = settings_or_exit(config)
    key = _guarded(lambda: actions.revoke_key(settings, key_id))
    typer.echo(f"revoked key {key.id} ({key.prefix}…) of tenant {key.tenant}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sparkplane` app."""
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(keys_app, name="keys")
