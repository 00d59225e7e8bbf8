"""Admin users page: create (one-time password shown once), role, reset password, disable."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from starlette.responses import Response

from controlplane.console import users
from controlplane.console.auth import ConsoleAuthError
from controlplane.console.deps import AdminAction, AdminViewer
from controlplane.console.models import Role
from controlplane.console.notices import notice_text
from controlplane.console.sessions import ActiveSession
from controlplane.console.web import admin_context, ensure_audit_writable, redirect, render, run_db
from controlplane.tenancy.actions import AdminContext

router = APIRouter()


async def _page(request: Request, active: ActiveSession, *, notice: str | None = None,
                error: str | None = None, secret: tuple[str, str] | None = None,
                status_code: int = 200) -> Response:  # fmt: skip
    rows = await run_db(request, users.list_users)
    return render(
        request, "admins.html", active, status_code=status_code, section="admins",
        title="Admin users", users=rows, roles=[role.value for role in Role], notice=notice,
        error=error, secret=secret,
    )  # fmt: skip


@router.get("/admins")
async def admin_list(request: Request, active: AdminViewer, notice: str = "") -> Response:
    return await _page(request, active, notice=notice_text(notice))


async def _attempt(request: Request, active: ActiveSession,
                   work: Callable[[AdminContext], Awaitable[None]]) -> Response | None:  # fmt: skip
    """Run a user change; a refused change re-renders the page with the reason."""
    ensure_audit_writable(request)
    try:
        await work(admin_context(request, active))
    except ConsoleAuthError as exc:
        return await _page(request, active, error=str(exc), status_code=400)
    return None


@router.post("/admins")
async def admin_create(request: Request, active: AdminAction) -> Response:
    form = await request.form()
    username, role = str(form.get("username", "")), str(form.get("role", ""))
    ensure_audit_writable(request)
    try:
        secret = await users.create_user(admin_context(request, active), username, role)
    except ConsoleAuthError as exc:
        return await _page(request, active, error=str(exc), status_code=400)
    return await _page(request, active, secret=(username.strip().lower(), secret),
                       notice="User created. Hand over the one-time password below.")  # fmt: skip


@router.post("/admins/{username}/reset")
async def admin_reset(request: Request, username: str, active: AdminAction) -> Response:
    ensure_audit_writable(request)
    try:
        secret = await users.reset_user_password(admin_context(request, active), username)
    except ConsoleAuthError as exc:
        return await _page(request, active, error=str(exc), status_code=400)
    return await _page(request, active, secret=(username, secret),
                       notice="Password reset; the user's sessions were ended.")  # fmt: skip


@router.post("/admins/{username}/role")
async def admin_role(request: Request, username: str, active: AdminAction) -> Response:
    role = str((await request.form()).get("role", ""))
    failed = await _attempt(request, active, lambda ctx: users.set_role(ctx, username, role))
    return failed or redirect("/admins", notice="admin_updated")


@router.post("/admins/{username}/disable")
async def admin_disable(request: Request, username: str, active: AdminAction) -> Response:
    failed = await _attempt(request, active, lambda ctx: users.set_disabled(ctx, username, True))
    return failed or redirect("/admins", notice="admin_updated")


@router.post("/admins/{username}/enable")
async def admin_enable(request: Request, username: str, active: AdminAction) -> Response:
    failed = await _attempt(request, active, lambda ctx: users.set_disabled(ctx, username, False))
    return failed or redirect("/admins", notice="admin_updated")


@router.post("/admins/{username}/unlock")
async def admin_unlock(request: Request, username: str, active: AdminAction) -> Response:
    failed = await _attempt(request, active, lambda ctx: users.unlock_user(ctx, username))
    return failed or redirect("/admins", notice="admin_updated")
