"""`sparkplane tenants ...`, `sparkplane keys ...`.

All commands read the same settings as the server (`--config FILE` plus `SPARKPLANE_*`), so
they work on the server's database. `keys create` prints the new key alone on the last line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from controlplane.audit import AuditUnavailable
from controlplane.cli.options import ConfigOption, settings_or_exit
from controlplane.tenancy import actions, store
from controlplane.tenancy.limits import BY_NAME, LIMITS, LimitField
from controlplane.tenancy.models import KEY_EXPIRY_RULE, TenantPublic
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


def _limits(given: dict[str, Any]) -> dict[str, Any]:
    """The limit options given, as TenantCreate/TenantUpdate fields."""
    limits = {}
    for name, value in given.items():
        if value is None:
            continue
        field = BY_NAME[name]
        if field.kind is list:
            value = [part.strip() for part in value.split(",") if part.strip()]
        elif field.optional and value == 0:
            value = None  # 0 = no limit (clears it on update)
        limits[name] = value
    return limits


def _listed(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value) or "*"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def _show_tenant(tenant: TenantPublic) -> None:
    state = "disabled" if tenant.disabled else "enabled"
    state += ",system" if tenant.system else ""
    limits = [
        f"{f.limit.listed}={_listed(getattr(tenant, f.name))}" for f in LIMITS if f.limit.listed
    ]
    typer.echo("\t".join([tenant.name, state, *limits]))


def _option(field: LimitField) -> inspect.Parameter:
    """The `--name` option of a limit: its value type, or a comma-separated string for a list."""
    flag = "--" + (field.limit.option or field.name).replace("_", "-")
    if field.kind is bool:  # a switch: --capture-content / --no-capture-content
        flag += "/--no-" + flag[2:]
    kind: Any = str if field.kind is list else field.kind
    annotation = Annotated[kind | None, typer.Option(flag, help=field.limit.cli)]
    return inspect.Parameter(
        field.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=annotation
    )


def with_limit_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command that takes `**limits` one option per limit with CLI help, after --config.

    Typer reads the options from the signature, so they are added to it: their names, help and
    order are those of TenantLimits (a new limit gets an option from its `Limit(cli=...)`).
    """
    signature = inspect.signature(command, eval_str=True)
    declared = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    after_config = [p.name for p in declared].index("config") + 1
    options = [_option(field) for field in LIMITS if field.limit.cli is not None]
    parameters = [*declared[:after_config], *options, *declared[after_config:]]
    command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return command


@tenants_app.command("create")
@with_limit_options
def tenants_create(
    name: str,
    config: ConfigOption = None,
    system: Annotated[
        bool,
        typer.Option(
            help="the appliance's own tenant (made by the installer): never disabled, "
            "left out of usage totals"
        ),
    ] = False,
    **limits: Any,
) -> None:
    """Create a tenant."""
    settings = settings_or_exit(config)
    made = _guarded(lambda: actions.create_tenant(settings, name, system=system, **_limits(limits)))
    _show_tenant(made)


@tenants_app.command("list")
def tenants_list(config: ConfigOption = None) -> None:
    """List tenants and their limits."""
    for tenant in actions.list_tenants(settings_or_exit(config)):
        _show_tenant(tenant)


@tenants_app.command("update")
@with_limit_options
def tenants_update(
    name: str,
    config: ConfigOption = None,
    enable: Annotated[bool, typer.Option(help="enable a disabled tenant")] = False,
    **limits: Any,
) -> None:
    """Change a tenant's limits (only the options given)."""
    changes = _limits(limits)
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
    expires: Annotated[
        str, typer.Option(help=f"days until the key expires: {KEY_EXPIRY_RULE} (never)")
    ] = "never",
    name: Annotated[str, typer.Option(help="a label for the key")] = "",
) -> None:
    """Create a key; the key is printed once, alone on the last line."""
    settings = settings_or_exit(config)
    # Refused before anything is opened.
    days = _guarded(lambda: store.key_expiry_from_text(expires))
    secret = _guarded(lambda: actions.create_key(settings, tenant, days, name))
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
