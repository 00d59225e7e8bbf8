"""Change-password page (local accounts; directory accounts change theirs in the directory)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from controlplane.console.auth import MIN_PASSWORD_LENGTH, ConsoleAuthError, change_password
from controlplane.console.deps import Action, Viewer
from controlplane.console.models import AdminUser
from controlplane.console.sessions import end_user_sessions
from controlplane.console.web import ensure_audit_writable, record_change, redirect, render, run_db

router = APIRouter()


def _change(db: Session, user_id: int, keep: str, current: str, new: str) -> None:
    user = db.get(AdminUser, user_id)
    assert user is not None
    change_password(db, user, current, new)
    end_user_sessions(db, user_id, keep_token_hash=keep)  # sign out every other browser
    db.commit()


@router.get("/password")
async def password_form(request: Request, active: Viewer) -> Response:
    return render(request, "password.html", active, title="Change password",
                  min_length=MIN_PASSWORD_LENGTH)  # fmt: skip


@router.post("/password")
async def password_change(request: Request, active: Action) -> Response:
    form = await request.form()
    current = str(form.get("current_password", ""))
    new = str(form.get("new_password", ""))
    error = None
    if new != str(form.get("repeat_password", "")):
        error = "the two new passwords differ"
    else:
        ensure_audit_writable(request)
        try:
            await run_db(request, _change, active.user_id, active.token_hash, current, new)
        except ConsoleAuthError as exc:
            error = str(exc)
    if error is not None:
        return render(request, "password.html", active, status_code=400, error=error,
                      title="Change password", min_length=MIN_PASSWORD_LENGTH)  # fmt: skip
    await record_change(request, "admin.password_change", active, target=active.username)
    return redirect("/", notice="password_changed")
