"""A tenant's policy: the limits the gateway enforces, as an immutable copy of its row."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.tenancy.models import Tenant


@dataclass(frozen=True)
class TenantPolicy:
    """The limits admission enforces, copied from a `Tenant` row (immutable, cheap to compare)."""

    tenant_id: int
    name: str
    max_concurrency: int
    weight: float
    rpm: int | None
    tpm: int | None
    daily_tokens: int | None
    monthly_tokens: int | None
    max_tokens: int | None
    max_context_tokens: int | None
    allowed_models: frozenset[str]
    queue_size: int
    queue_timeout: float
    disabled: bool
    capture_content: bool

    @classmethod
    def from_row(cls, tenant: Tenant) -> TenantPolicy:
        return cls(
            tenant_id=tenant.id,
            name=tenant.name,
            max_concurrency=tenant.max_concurrency,
            weight=tenant.weight,
            rpm=tenant.rpm,
            tpm=tenant.tpm,
            daily_tokens=tenant.daily_tokens,
            monthly_tokens=tenant.monthly_tokens,
            max_tokens=tenant.max_tokens,
            max_context_tokens=tenant.max_context_tokens,
            allowed_models=frozenset(tenant.allowed_models or ()),
            queue_size=tenant.queue_size,
            queue_timeout=tenant.queue_timeout,
            disabled=tenant.disabled,
            capture_content=tenant.capture_content,
        )

    def allows_model(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models
