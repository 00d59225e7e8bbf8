"""Turning HTML form posts into the control plane's pydantic schemas, with readable errors."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from controlplane.tenancy.limits import LIMITS
from controlplane.tenancy.models import TenantCreate, TenantUpdate

# The tenant form: a text input per limit, a checkbox per on/off one (TenantLimits' order).
TEXT_FIELDS = [field for field in LIMITS if field.kind is not bool]
CHECKBOXES = [field for field in LIMITS if field.kind is bool]
LABELS = {field.name: field.label for field in LIMITS}


class FormError(ValueError):
    """A form that does not validate; `messages` name each bad field."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def describe_errors(exc: ValidationError) -> list[str]:
    messages = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error.get("loc", ()))
        label = LABELS.get(field, field or "form")
        messages.append(f"{label}: {error.get('msg', 'invalid value')}")
    return messages


def _limit_values(form: FormData) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in TEXT_FIELDS:
        raw = str(form.get(field.name, "")).strip()
        if field.kind is list:
            values[field.name] = [part for part in re.split(r"[,\s]+", raw) if part]
        else:
            values[field.name] = raw or None
    for field in CHECKBOXES:
        values[field.name] = form.get(field.name) == "on"
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
    posted = isinstance(source, FormData)
    values: dict[str, str] = {}
    for name in [*(field.name for field in TEXT_FIELDS), "name"]:
        value = source.get(name) if posted else getattr(source, name, None)
        if isinstance(value, list):
            value = ", ".join(value)
        values[name] = "" if value is None else str(value)
    for field in CHECKBOXES:
        on = source.get(field.name) == "on" if posted else getattr(source, field.name, False)
        values[field.name] = "on" if on else ""
    return values


def optional_int(form: FormData, name: str, low: int, high: int) -> int | None:
    raw = str(form.get(name, "")).strip()
    if not raw:
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise FormError([f"{name}: must be a whole number from {low} to {high}"])
    return int(raw)
