"""A tenant's policy: the limits the gateway enforces, as an immutable copy of its row."""

from __future__ import annotations

from pydantic import ConfigDict

from controlplane.tenancy.limits import LIMITS, TenantLimits
from controlplane.tenancy.models import Tenant


class TenantPolicy(TenantLimits):
    """Every limit of `TenantLimits`, copied from a `Tenant` row (immutable, cheap to compare)."""

    model_config = ConfigDict(frozen=True)

    tenant_id: int
    name: str
    disabled: bool

    @classmethod
    def from_row(cls, tenant: Tenant) -> TenantPolicy:
        # Not validated again: the row was validated when written (and bounds may tighten later).
        limits = {field.name: getattr(tenant, field.name) for field in LIMITS}
        return cls.model_construct(
            tenant_id=tenant.id, name=tenant.name, disabled=tenant.disabled, **limits
        )

    def allows_model(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models
