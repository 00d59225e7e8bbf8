"""`sparkplane admin-token ...`: the admin API's bearer tokens, with a role, rotated.

`rotate` prints the new token alone on the last line of stdout (like `admins create`); `--out
FILE` also writes it to a file readable only by its owner. The previous token of that name
stops working on the next request, on every replica; rotating the default name also retires
the token of SPARKPLANE_ADMIN_TOKEN (remove it from the settings afterwards).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from controlplane.api import admin_tokens
from controlplane.audit import AuditUnavailable
from controlplane.cli.options import ConfigOption, settings_or_exit
from controlplane.core.security import write_private_file
from controlplane.tenancy.actions import AdminContext, admin_context

admin_token_app = typer.Typer(help="Admin API tokens: rotate, list.", no_args_is_help=True)


@admin_token_app.command("rotate")
def rotate(
    role: Annotated[str, typer.Option(help="admin (reads and changes) or auditor (reads)")],
    name: Annotated[str, typer.Option(help="the token's name (the actor in audit entries)")] = (
        admin_tokens.DEFAULT_NAME
    ),
    out: Annotated[Path | None, typer.Option(help="also write the token here (mode 0600)")] = None,
    config: ConfigOption = None,
) -> None:
    """Write a new token for NAME with ROLE; the previous one of NAME stops working."""
    if role not in ("admin", "auditor"):
        typer.echo("error: --role must be admin or auditor", err=True)
        raise typer.Exit(1)
    settings = settings_or_exit(config)
    configured = settings.admin_token.get_secret_value() if settings.admin_token else None
    retire = configured if name == admin_tokens.DEFAULT_NAME else None

    async def main() -> str:
        async with admin_context(settings) as ctx:
            ctx.ensure_audit_writable()
            token, prefix, retired = await ctx.run(lambda db: _rotate(db, ctx, name, role, retire))
            fields = {"role": role, "prefix": prefix, "retired_setting": retired}
            await ctx.audit.record_change("admin.admin_token_rotate", actor=ctx.actor,
                                          target=name, **fields)  # fmt: skip
            return token

    try:
        token = asyncio.run(main())
    except AuditUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if out is not None:
        write_private_file(out, (token + "\n").encode())
        typer.echo(f"token written to {out} (mode 0600)")
    typer.echo(f"new {role} token {name!r} (shown once; the previous one no longer works):")
    typer.echo(token)


def _rotate(
    db: Session, ctx: AdminContext, name: str, role: str, retire: str | None
) -> tuple[str, str, bool]:
    """(token, prefix, whether this rotation retired SPARKPLANE_ADMIN_TOKEN)."""
    token_role: admin_tokens.TokenRole = "admin" if role == "admin" else "auditor"
    rotation = admin_tokens.rotate(db, ctx.pepper, name, token_role, retire)
    db.commit()
    return rotation.token, rotation.row.prefix, rotation.retired_setting


TokenRow = tuple[str, str, str, str]  # name, role, prefix, created


@admin_token_app.command("list")
def list_tokens(config: ConfigOption = None) -> None:
    """The tokens in force: name, role, prefix, created (never the token); SPARKPLANE_ADMIN_TOKEN
    too while no rotation of the default name has retired it."""
    settings = settings_or_exit(config)
    configured = settings.admin_token.get_secret_value() if settings.admin_token else None

    async def main() -> list[TokenRow]:
        async with admin_context(settings) as ctx:
            return await ctx.run(lambda db: _in_force(db, ctx.pepper, configured))

    for name, role, prefix, created in asyncio.run(main()):
        typer.echo(f"{name}\t{role}\t{prefix}…\t{created}")


def _in_force(db: Session, pepper: bytes, configured: str | None) -> list[TokenRow]:
    rows = [(r.name, r.role, r.prefix, r.created_at.isoformat())
            for r in admin_tokens.active_tokens(db)]  # fmt: skip
    if configured and admin_tokens.lookup(db, pepper, configured) is None:  # never retired
        rows.append(("SPARKPLANE_ADMIN_TOKEN", "admin", "(setting)", "-"))
    return rows


def register(app: typer.Typer) -> None:
    """Add `admin-token` to the `sparkplane` app."""
    app.add_typer(admin_token_app, name="admin-token")
