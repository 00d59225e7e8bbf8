"""Post/redirect/get notices: the redirect carries a code, never free text to reflect."""

from __future__ import annotations

NOTICES = {
    "tenant_created": "Tenant created.",
    "tenant_updated": "Limits saved; they apply to the next request.",
    "tenant_disabled": "Tenant disabled: its keys are refused from the next request on.",
    "tenant_enabled": "Tenant enabled.",
    "tenant_erased": "Tenant erased: its keys are revoked and its content key destroyed.",
    "key_revoked": "Key revoked: the next request with it gets 401.",
    "password_changed": "Password changed. Other browsers signed in as you were signed out.",
    "admin_created": "User created.",
    "admin_updated": "User updated.",
}


def notice_text(code: str) -> str | None:
    """The message for `code`, or None for an empty or unknown code."""
    return NOTICES.get(code) if code else None
