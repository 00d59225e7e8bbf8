"""A tenant's limits, declared once: one field of `TenantLimits` per limit.

Each field gives the limit's type, bounds and default (pydantic, the admin API's schema) and a
`Limit` with the rest: its column type, what an empty value means and the words the console and
the CLI use. From it are made the `tenants` columns, the Create/Update/Public schemas
(`models.py`), the gateway's `TenantPolicy`, the CLI options (`cli/tenants.py`), the console form
and tenant pages, and the parameter types of PostgreSQL admission (`admission/pg_schema.py`).
Adding a limit is one field here plus a migration (`core/migrations/README.md`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo
from sqlalchemy import JSON, BigInteger, Boolean, Float, Integer
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import MappedColumn, mapped_column
from sqlalchemy.types import TypeEngine

# rpm, max_tokens, max_context_tokens: a 32-bit column
PositiveInt = Annotated[int, Field(ge=1, le=2**31 - 1)]
TokenCount = Annotated[int, Field(ge=1, le=10**15)]  # tpm and quotas: a 64-bit column
ModelName = Annotated[str, Field(min_length=1, max_length=200)]


@dataclass(frozen=True)
class Limit:
    """What a limit is besides its schema: storage, meaning of empty, and its words."""

    column: type[TypeEngine[Any]]
    label: str  # console form and pages, and the console's validation messages
    hint: str = ""  # console form, after the label
    cli: str | None = None  # help of its `sparkplane tenants` option; None: no option
    option: str | None = None  # that option's name when it is not the field's
    listed: str | None = None  # key in the CLI's tenant line (`concurrency=4`); None: not shown
    unset: str | None = None  # what empty means on the tenant page; None: never empty (a card)
    unit: str = ""  # after the number on the tenant page
    brief: str | None = None  # after the number in the tenant list's Limits column


class TenantLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_concurrency: Annotated[
        int,
        Limit(
            Integer,
            "Max concurrency",
            "hard cap on requests in flight",
            cli="requests in flight at most",
            listed="concurrency",
        ),
    ] = Field(default=8, ge=1, le=10_000, description="hard cap on requests in flight")
    weight: Annotated[
        float,
        Limit(
            Float,
            "Weight",
            "share of the engine when it is saturated",
            cli="share of engine capacity under load",
            listed="weight",
        ),
    ] = Field(default=1.0, gt=0, le=1000, description="share of engine capacity under load")
    rpm: Annotated[
        PositiveInt | None,
        Limit(
            Integer,
            "Requests / minute",
            "empty = unlimited",
            cli="requests per minute (0: no limit)",
            listed="rpm",
            unset="unlimited",
            brief=" rpm",
        ),
    ] = Field(default=None, description="requests per minute")
    tpm: Annotated[
        TokenCount | None,
        Limit(
            BigInteger,
            "Tokens / minute",
            "empty = unlimited",
            cli="tokens per minute (0: no limit)",
            listed="tpm",
            unset="unlimited",
            brief=" tpm",
        ),
    ] = Field(default=None, description="tokens per minute")
    daily_tokens: Annotated[
        TokenCount | None,
        Limit(
            BigInteger,
            "Tokens / day",
            "empty = unlimited",
            cli="tokens per UTC day (0: no limit)",
            listed="daily",
            unset="unlimited",
            brief="/day",
        ),
    ] = None
    monthly_tokens: Annotated[
        TokenCount | None,
        Limit(
            BigInteger,
            "Tokens / month",
            "empty = unlimited",
            cli="tokens per UTC month (0: no limit)",
            listed="monthly",
            unset="unlimited",
        ),
    ] = None
    max_tokens: Annotated[
        PositiveInt | None,
        Limit(
            Integer,
            "Max tokens per request",
            "empty = engine default",
            cli="cap on a request's max_tokens (0: no cap)",
            listed="max_tokens",
            unset="engine default",
        ),
    ] = Field(default=None, description="cap on a request's max_tokens")
    max_context_tokens: Annotated[
        PositiveInt | None,
        Limit(
            Integer,
            "Max context per request",
            "prompt + completion tokens, counted by the engine; empty = the model's own",
            cli="cap on a request's prompt + completion tokens (0: no cap)",
            listed="max_context_tokens",
            unset="the model's own",
            unit=" tokens (prompt + completion)",
        ),
    ] = Field(
        default=None,
        description="cap on a request's prompt + completion tokens (counted by the engine)",
    )
    max_n: Annotated[
        int,
        Limit(
            Integer,
            "Max choices per request (n)",
            "sequences one request may ask for; each takes a concurrency slot",
            cli="most choices (n) one request may ask for",
            listed="max_n",
        ),
    ] = Field(
        default=4,
        ge=1,
        le=128,
        description="most choices (`n`) one request may ask for; each counts as a request in "
        "flight and for its max_tokens against the token limits",
    )
    allow_remote_media: Annotated[
        bool,
        Limit(
            Boolean,
            "Allow media by remote URL (the engine would fetch it)",
            cli="let media parts name an http(s) URL (docs/security.md)",
            listed="remote_media",
        ),
    ] = Field(
        default=False,
        description="let image/audio/video parts name an http(s) URL instead of inline data:",
    )
    allowed_models: Annotated[
        list[ModelName],
        Limit(
            JSON,
            "Allowed models",
            "comma-separated; empty = all",
            cli="allowed models, comma-separated (empty: all)",
            option="models",
            listed="models",
            unset="all",
        ),
    ] = Field(default_factory=list, description="empty = all")
    queue_size: Annotated[
        int,
        Limit(
            Integer, "Queue size", "requests that may wait for a slot", cli="requests that may wait"
        ),
    ] = Field(default=64, ge=0, le=100_000)
    queue_timeout: Annotated[
        float,
        Limit(
            Float,
            "Queue timeout (s)",
            "then 429 with Retry-After",
            cli="seconds a request may wait",
        ),
    ] = Field(default=30.0, ge=0, le=3600, description="seconds a request may wait")
    retention_days: Annotated[
        int,
        Limit(Integer, "Audit retention (days)", "how long this tenant's records are kept"),
    ] = Field(default=365, ge=1, le=36_500)
    capture_content: Annotated[
        bool,
        Limit(
            Boolean,
            "Capture prompts and completions (encrypted per tenant)",
            cli="seal each call's prompt and answer in the audit store (docs/audit.md)",
            listed="capture",
        ),
    ] = False


KINDS: dict[type[TypeEngine[Any]], type] = {
    Integer: int, BigInteger: int, Float: float, Boolean: bool, JSON: list
}  # fmt: skip


@dataclass(frozen=True)
class LimitField:
    """One limit as the derived views need it."""

    name: str
    info: FieldInfo
    limit: Limit

    @property
    def kind(self) -> type:
        """int, float, bool or list: what the CLI parses and the form's input shows."""
        return KINDS[self.limit.column]

    @property
    def optional(self) -> bool:
        """Empty (None) means "no limit": NULL in the column, `0` on the CLI clears it."""
        return self.info.default is None

    @property
    def label(self) -> str:
        return self.limit.label

    @property
    def hint(self) -> str:
        return self.limit.hint

    @property
    def inputmode(self) -> str | None:
        return {int: "numeric", float: "decimal"}.get(self.kind)

    def column(self) -> MappedColumn[Any]:
        """Its column in `tenants` (NULL only for an optional limit)."""
        info = self.info
        default = info.default_factory if info.default_factory is not None else info.default
        if self.optional:
            return mapped_column(self.limit.column, nullable=True)
        return mapped_column(self.limit.column, nullable=False, default=default)

    def postgres_type(self) -> str:
        """Its SQL type on PostgreSQL (`integer`, `bigint`, ...)."""
        return str(self.limit.column().compile(dialect=postgresql.dialect())).lower()

    def update_annotation(self) -> Any:
        """Its type in the Update schema: the same bounds, and None for "not given"."""
        bounds = [item for item in self.info.metadata if not isinstance(item, Limit)]
        annotation: Any = self.info.annotation
        if not self.optional:
            annotation = annotation | None
        return Annotated[(annotation, *bounds)] if bounds else annotation


def _limit_fields(model: type[BaseModel]) -> tuple[LimitField, ...]:
    fields = []
    for name, info in model.model_fields.items():
        limits = [item for item in info.metadata if isinstance(item, Limit)]
        if len(limits) != 1:
            raise TypeError(f"{model.__name__}.{name} needs exactly one Limit(...)")
        fields.append(LimitField(name, info, limits[0]))
    return tuple(fields)


LIMITS = _limit_fields(TenantLimits)
BY_NAME = {field.name: field for field in LIMITS}
