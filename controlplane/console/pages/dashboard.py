"""Dashboard: engines, live load per tenant, capacity, throughput, audit chain, retention
schedule, SIEM feed, disk space."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from controlplane.api.deps import audit_writer
from controlplane.appliance.system_info import appliance_root, disk_usage, read_system_info
from controlplane.audit.jobs import AuditJobs
from controlplane.audit.models import AuditCheckpoint, AuditEntry
from controlplane.audit.retention_job import RetentionRun
from controlplane.console.charts import meter
from controlplane.console.deps import Viewer
from controlplane.console.notices import notice_text
from controlplane.console.pages.system import capacity_report
from controlplane.console.queries import completion_tokens_last_day, entry_data
from controlplane.console.web import render, run_db
from controlplane.core.db import utcnow

router = APIRouter()
THROUGHPUT_WINDOW = timedelta(seconds=60)
DAY_SECONDS = 86_400.0


@dataclass(frozen=True)
class TenantLoad:
    name: str
    in_flight: int
    queued: int
    max_concurrency: int
    weight: float


@dataclass(frozen=True)
class ChainStatus:
    head_seq: int
    checkpoint_size: int | None
    checkpoint_time: datetime | None
    completion_tokens_window: int
    tenant_tokens_window: dict[str, int]


@dataclass(frozen=True)
class TenantShare:
    """A tenant's completion tok/s now (last 60 s) and over 24 h, against the measured peak."""

    name: str
    system: bool
    now_tok_s: float
    day_tok_s: float
    capacity_tok_s: float  # 0: no validate report yet

    def share(self, tok_s: float) -> float | None:
        return tok_s / self.capacity_tok_s if self.capacity_tok_s else None


def _chain_status(db: Session) -> ChainStatus:
    head = db.scalar(select(func.max(AuditEntry.seq))) or 0
    checkpoint = db.scalars(
        select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc()).limit(1)
    ).first()
    since = utcnow() - THROUGHPUT_WINDOW
    recent = db.scalars(
        select(AuditEntry).where(AuditEntry.kind == "api.completion", AuditEntry.time >= since)
    )
    per_tenant: dict[str, int] = {}
    for entry in recent:
        tokens = int(entry_data(entry).get("completion_tokens") or 0)
        per_tenant[entry.tenant or "-"] = per_tenant.get(entry.tenant or "-", 0) + tokens
    return ChainStatus(
        head, checkpoint.size if checkpoint else None, checkpoint.created if checkpoint else None,
        sum(per_tenant.values()), per_tenant,
    )  # fmt: skip


def _shares(
    request: Request, chain: ChainStatus, day: dict[str, tuple[float, bool]]
) -> list[TenantShare]:
    """Every tenant with tokens in the last 24 h or the last minute, busiest first."""
    report = capacity_report(appliance_root(request.app.state.settings))
    peak = report.peak_tok_s if report else 0.0
    window = THROUGHPUT_WINDOW.total_seconds()
    names = set(day) | set(chain.tenant_tokens_window)
    shares = [
        TenantShare(name, day.get(name, (0.0, False))[1],
                    chain.tenant_tokens_window.get(name, 0) / window,
                    day.get(name, (0.0, False))[0] / DAY_SECONDS, peak)
        for name in names
    ]  # fmt: skip
    return sorted(shares, key=lambda share: (-share.day_tok_s, share.name))


@dataclass(frozen=True)
class RetentionStatus:
    last: RetentionRun | None
    next: datetime | None  # None: not scheduled (SPARKPLANE_AUDIT_RETENTION_INTERVAL_HOURS=0)


def _retention_status(jobs: AuditJobs) -> RetentionStatus:
    """The last run as recorded in the database (whichever replica ran it) and the next."""
    job = jobs.retention
    if job is None:
        return RetentionStatus(None, None)
    last = job.last_run()
    return RetentionStatus(last, job.next_due(last))


def _disks(request: Request) -> list[tuple[str, int, int, Any]]:
    settings = request.app.state.settings
    paths = {"Control-plane data": Path(settings.data_dir)}
    root = appliance_root(settings)
    if root is not None:
        paths["Model store"] = root / "var" / "lib" / "sparkplane" / "models"
    disks = []
    for label, path in paths.items():
        usage = disk_usage(path)
        if usage is not None:
            used, total = usage
            disks.append((label, used, total, meter(used / total, f"{label} disk used")))
    return disks


@router.get("/")
async def dashboard(request: Request, active: Viewer, notice: str = "") -> Response:
    gateway = request.app.state.gateway
    engines = list(gateway.engines.engines)
    capacity = sum(engine.capacity for engine in engines if engine.healthy)
    in_flight = sum(engine.in_flight for engine in engines)
    tenants = sorted(
        (TenantLoad(s.policy.name, s.in_flight, len(s.queue), s.policy.max_concurrency,
                    s.policy.weight) for s in gateway.admission.tenants.values()),
        key=lambda load: (-load.in_flight - load.queued, load.name),
    )  # fmt: skip
    chain = await run_db(request, _chain_status)
    last_day = await run_db(request, lambda db: completion_tokens_last_day(db, utcnow()))
    shares = await run_in_threadpool(_shares, request, chain, last_day)
    jobs: AuditJobs = request.app.state.audit_jobs
    retention = await run_in_threadpool(_retention_status, jobs)
    audit = audit_writer(request)
    system = read_system_info(appliance_root(request.app.state.settings))
    models = sorted({model for engine in engines for model in engine.model_ids})
    return render(
        request, "dashboard.html", active, section="dashboard", title="Dashboard",
        engines=engines, capacity=capacity, in_flight=in_flight, tenants=tenants, chain=chain,
        capacity_meter=meter(in_flight / capacity if capacity else 0, "engine capacity in use"),
        tokens_per_second=chain.completion_tokens_window / THROUGHPUT_WINDOW.total_seconds(),
        audit_healthy=bool(audit.healthy), audit_error=audit.last_error, models=models,
        profile=system.profile, disks=_disks(request), notice=notice_text(notice),
        retention=retention, feed=jobs.feed.status if jobs.feed else None, shares=shares,
    )  # fmt: skip
