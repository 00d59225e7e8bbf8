"""`sparkplane admins ...`: console users from the shell (the installer's first admin).

`create` and `reset-password` print the one-time password alone on the last line of stdout,
so scripts (`sparkplane demo`) can take it with `tail -n 1`; `--out FILE` also writes it to a
file readable only by its owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from controlplane.audit import AuditUnavailable
from controlplane.cli.options import ConfigOption, settings_or_exit
from controlplane.console import users
from controlplane.console.auth import ConsoleAuthError
from controlplane.console.web import format_time
from controlplane.core.db import init_db, make_engine, session_factory
from controlplane.core.security import write_private_file
from controlplane.tenancy.actions import AdminContext, admin_context

T = TypeVar("T")
OutOption = Annotated[
    Path | None, typer.Option("--out", help="also write the one-time password here (mode 0600)")
]

admins_app = typer.Typer(help="Console users: create, list, reset, disable.", no_args_is_help=True)


def _run(config: Path | None, work: Callable[[AdminContext], Awaitable[T]]) -> T:
    settings = settings_or_exit(config)

    async def main() -> T:
        async with admin_context(settings) as ctx:
            return await work(ctx)

    try:
        return asyncio.run(main())
    except (ConsoleAuthError, AuditUnavailable) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _show_password(secret: str, out: Path | None) -> None:
    if out is not None:
        write_private_file(out, (secret + "\n").encode())
        typer.echo(f"one-time password written to {out} (mode 0600)")
    typer.echo("one-time password (it must be changed at the first sign-in):")
    typer.echo(secret)


@admins_app.command("create")
def create(
    username: str,
    role: Annotated[str, typer.Option(help="admin or auditor")] = "admin",
    reset: Annotated[bool, typer.Option(help="if the user exists, give it a new password")] = False,
    out: OutOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a console user with a generated one-time password."""

    async def work(ctx: AdminContext) -> tuple[str, str]:
        try:
            return "created", await users.create_user(ctx, username, role)
        except ConsoleAuthError as exc:
            if not (reset and "already exists" in str(exc)):
                raise
        return "reset", await users.reset_user_password(ctx, username)

    outcome, secret = _run(config, work)
    typer.echo(f"{outcome} console user {username.strip().lower()!r}")
    _show_password(secret, out)


@admins_app.command("reset-password")
def reset_password(username: str, out: OutOption = None, config: ConfigOption = None) -> None:
    """Give a user a new one-time password (and end its sessions; `unlock` lifts a sign-in wait)."""
    secret = _run(config, lambda ctx: users.reset_user_password(ctx, username))
    _show_password(secret, out)


@admins_app.command("set-role")
def set_role(username: str, role: str, config: ConfigOption = None) -> None:
    """Change a user's role (admin or auditor)."""
    _run(config, lambda ctx: users.set_role(ctx, username, role))
    typer.echo(f"{username}: role {role}")


@admins_app.command("disable")
def disable(username: str, config: ConfigOption = None) -> None:
    """Disable a user and end its sessions."""
    _run(config, lambda ctx: users.set_disabled(ctx, username, True))
    typer.echo(f"{username}: disabled")


@admins_app.command("enable")
def enable(username: str, config: ConfigOption = None) -> None:
    """Enable a disabled user."""
    _run(config, lambda ctx: users.set_disabled(ctx, username, False))
    typer.echo(f"{username}: enabled")


@admins_app.command("unlock")
def unlock(username: str, config: ConfigOption = None) -> None:
    """Lift the sign-in throttle on an account (from every address) before it runs out."""
    _run(config, lambda ctx: users.unlock_user(ctx, username))
    typer.echo(f"{username}: unlocked")


@admins_app.command("list")
def list_users(config: ConfigOption = None) -> None:
    """List console users."""
    settings = settings_or_exit(config)
    engine = make_engine(settings.database_url)
    try:
        init_db(engine)
        with session_factory(engine)() as db:
            rows = users.list_users(db)
    finally:
        engine.dispose()
    typer.echo("USER\tROLE\tSOURCE\tSTATUS\tLAST SIGN-IN\tFROM\tIDENTITY")
    for user in rows:
        states = {"disabled": user.disabled, "throttled": user.throttled,
                  "must-change-password": user.must_change_password}  # fmt: skip
        flags = [name for name, on in states.items() if on]
        signed_in = format_time(user.last_signin_at) if user.last_signin_at else "never"
        typer.echo("\t".join([user.username, user.role, user.source, ",".join(flags) or "active",
                               signed_in, user.last_signin_address or "-",
                               user.external_id or "-"]))  # fmt: skip


def register(app: typer.Typer) -> None:
    """Mount `admins` on the one `sparkplane` app."""
    app.add_typer(admins_app, name="admins")
