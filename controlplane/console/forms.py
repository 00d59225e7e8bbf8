"""Turning HTML form posts into the control plane's pydantic schemas, with readable errors."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from controlplane.tenancy.models import TenantCreate, TenantLimits, TenantUpdate

LIMIT_FIELDS = [name for name in TenantLimits.model_fields if name != "capture_content"]
# Human labels and hints for the tenant form, in display order.
TENANT_FIELD_HELP: dict[str, tuple[str, str]] = {
    "max_concurrency": ("Max concurrency", "hard cap on requests in flight"),
    "weight": ("Weight", "share of the engine when it is saturated"),
    "rpm": ("Requests / minute", "empty = unlimited"),
    "tpm": ("Tokens / minute", "empty = unlimited"),
    "daily_tokens": ("Tokens / day", "empty = unlimited"),
    "monthly_tokens": ("Tokens / month", "empty = unlimited"),
    "max_tokens": ("Max tokens per request", "empty = engine default"),
    "max_context_tokens": (
        "Max context per request",
        "prompt + completion tokens, counted by the engine; empty = the model's own",
    ),
    "allowed_models": ("Allowed models", "comma-separated; empty = all"),
    "queue_size": ("Queue size", "requests that may wait for a slot"),
    "queue_timeout": ("Queue timeout (s)", "then 429 with Retry-After"),
    "retention_days": ("Audit retention (days)", "how long this tenant's records are kept"),
}


class FormError(ValueError):
    """A form that does not validate; `messages` name each bad field."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def describe_errors(exc: ValidationError) -> list[str]:
    messages = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error.get("loc", ()))
        label = TENANT_FIELD_HELP.get(field, (field or "form", ""))[0]
        messages.append(f"{label}: {error.get('msg', 'invalid value')}")
    return messages


def _limit_values(form: FormData) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        raw = str(form.get(name, "")).strip()
        if name == "allowed_models":
            values[name] = [part for part in re.split(r"[,\s]+", raw) if part]
        else:
            values[name] = raw or None
    values["capture_content"] = form.get("capture_content") == "on"
    return values


def _validated(schema: type[BaseModel], values: dict[str, Any]) -> Any:
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        raise FormError(describe_errors(exc)) from None


def tenant_create_from_form(form: FormData) -> TenantCreate:
    values = _limit_values(form)
    # Blank required fields fall back to the schema's defaults on create.
    values = {key: value for key, value in values.items() if value is not None}
    values["name"] = str(form.get("name", "")).strip()
    result: TenantCreate = _validated(TenantCreate, values)
    return result


def tenant_update_from_form(form: FormData) -> TenantUpdate:
    """Every field of the edit form is sent: a blank optional limit clears it."""
    result: TenantUpdate = _validated(TenantUpdate, _limit_values(form))
    return result


def form_values(source: Any) -> dict[str, str]:
    """Field values to prefill the tenant form from a tenant row or a rejected post."""
    values: dict[str, str] = {}
    for name in [*LIMIT_FIELDS, "name"]:
        value = source.get(name) if isinstance(source, FormData) else getattr(source, name, None)
        if isinstance(value, list):
            value = ", ".join(value)
        values[name] = "" if value is None else str(value)
    if isinstance(source, FormData):
        values["capture_content"] = "on" if source.get("capture_content") == "on" else ""
    else:
        values["capture_content"] = "on" if getattr(source, "capture_content", False) else ""
    return values


def optional_int(form: FormData, name: str, low: int, high: int) -> int | None:
    raw = str(form.get(name, "")).strip()
    if not raw:
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise FormError([f"{name}: must be a whole number from {low} to {high}"])
    return int(raw)
