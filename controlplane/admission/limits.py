"""Value types of admission: rejection reasons, the token bucket, rate and quota checks."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from controlplane.core.errors import DomainError
from controlplane.tenancy.policy import TenantPolicy


class RejectReason(StrEnum):
    CONCURRENCY = "tenant_concurrency_limit"
    ENGINE_CAPACITY = "engine_capacity"
    RPM = "rpm_limit"
    TPM = "tpm_limit"
    DAILY_QUOTA = "daily_token_quota"
    MONTHLY_QUOTA = "monthly_token_quota"
    ENGINE_UNAVAILABLE = "engine_unavailable"
    COORDINATION_UNAVAILABLE = "coordination_unavailable"


_UNAVAILABLE = frozenset({RejectReason.ENGINE_UNAVAILABLE, RejectReason.COORDINATION_UNAVAILABLE})


class Rejected(DomainError):
    """Admission said no; `reason` names the limit (it is the `code`), `retry_after` is in
    seconds. 503 when nothing could serve the call, 429 when a limit was reached."""

    def __init__(self, reason: RejectReason, message: str, retry_after: float) -> None:
        status = 503 if reason in _UNAVAILABLE else 429
        super().__init__(message, status=status, code=reason.value)
        self.reason = reason
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


@dataclass(frozen=True, slots=True)
class Demand:
    """What one call asks the engine to run: `sequences` (its `n`) and the most completion
    tokens they may produce (n x max_tokens; 0 when no max_tokens is known).

    A call holds `sequences` of its tenant's concurrency and advances its fair-queue time by
    sequences / weight; `tokens` are spoken for while it runs (see `check_rates_and_quotas`).
    """

    sequences: int = 1
    tokens: int = 0


ONE = Demand()


class TokenBucket:
    """`per_minute` tokens per minute, bursting up to one minute's worth; may go into debt."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self._level = float(per_minute)
        self._stamp = time.monotonic()

    @classmethod
    def resize(cls, bucket: TokenBucket | None, per_minute: int | None) -> TokenBucket | None:
        if per_minute is None:
            return None
        if bucket is None or bucket.per_minute != per_minute:
            fresh = cls(per_minute)
            if bucket is not None:  # keep what was spent: a limit change is no free refill
                fresh._level = min(bucket.level(), float(per_minute))
            return fresh
        return bucket

    def level(self) -> float:
        now = time.monotonic()
        self._level = min(float(self.per_minute), self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._level

    def try_take(self, amount: float) -> bool:
        if self.level() >= amount:
            self._level -= amount
            return True
        return False

    def spend(self, amount: float) -> None:
        self.level()
        self._level -= amount

    def seconds_until(self, amount: float) -> float:
        missing = amount - self.level()
        return max(0.0, missing / self.rate)


def seconds_until_next_utc_day(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


def seconds_until_next_utc_month(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    start = datetime(year, month, 1, tzinfo=UTC)
    return (start - now).total_seconds()


class UsageCounts(Protocol):
    def tokens_today(self, tenant_id: int) -> int: ...
    def tokens_this_month(self, tenant_id: int) -> int: ...


def check_rates_and_quotas(
    policy: TenantPolicy,
    requests: TokenBucket | None,
    tokens: TokenBucket | None,
    usage: UsageCounts,
    reserved: int = 0,
) -> None:
    """Raise Rejected naming the first quota or rate limit the request would break.

    `reserved`: the tokens the tenant's calls in flight may still produce (their n x
    max_tokens); they count as spent until those calls end and their real usage is charged.
    Quotas before rates, and rpm last: a request refused for another reason takes no rpm token.
    """
    daily, monthly = policy.daily_tokens, policy.monthly_tokens
    if daily is not None and usage.tokens_today(policy.tenant_id) + reserved >= daily:
        raise Rejected(
            RejectReason.DAILY_QUOTA,
            _spent("daily token quota", daily, reserved),
            seconds_until_next_utc_day(),
        )
    if monthly is not None and usage.tokens_this_month(policy.tenant_id) + reserved >= monthly:
        raise Rejected(
            RejectReason.MONTHLY_QUOTA,
            _spent("monthly token quota", monthly, reserved),
            seconds_until_next_utc_month(),
        )
    if tokens is not None and tokens.level() - reserved <= 0:
        raise Rejected(
            RejectReason.TPM,
            _spent("tokens-per-minute limit", policy.tpm, reserved, "reached"),
            tokens.seconds_until(1 + reserved),
        )
    if requests is not None and not requests.try_take(1):
        raise Rejected(
            RejectReason.RPM,
            f"requests-per-minute limit of {policy.rpm} reached",
            requests.seconds_until(1),
        )


def _spent(limit: str, value: int | None, reserved: int, what: str = "used up") -> str:
    held = f" ({reserved} of them held by requests in flight)" if reserved else ""
    return f"{limit} of {value} {what}{held}"
