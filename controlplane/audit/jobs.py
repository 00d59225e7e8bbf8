"""The audit trail's background work in a running control plane: the retention schedule and the
SIEM feed. `start_audit_jobs` is the one call the lifespan makes; both stop with its stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from controlplane.audit.feed.sender import SiemFeed
from controlplane.audit.feed.transports import TargetError, TlsFiles, make_transport, parse_target
from controlplane.audit.retention_job import RetentionJob
from controlplane.audit.writer import AuditWriter
from controlplane.core.config import ConfigError, Settings


@dataclass(frozen=True)
class AuditJobs:
    retention: RetentionJob | None  # None: retention only by `sparkplane audit prune`
    feed: SiemFeed | None  # None: no SIEM target configured


async def start_audit_jobs(
    settings: Settings,
    engine: Engine,
    writer: AuditWriter,
    registry: CollectorRegistry,
    policies: Callable[[], Mapping[str, int]],
    stack: AsyncExitStack,
) -> AuditJobs:
    """Start what the settings ask for; `policies()` reads each tenant's retention days."""
    retention = None
    if settings.audit_retention_interval_hours > 0:
        retention = RetentionJob(
            engine, lambda: writer.signer, policies,
            default_days=settings.audit_retention_days,
            interval=timedelta(hours=settings.audit_retention_interval_hours),
        )  # fmt: skip
        task = asyncio.create_task(retention.run_forever(), name="audit-retention")
        stack.push_async_callback(_cancel, task)
    feed = None
    if settings.siem_target:
        tls = TlsFiles(settings.siem_tls_ca, settings.siem_tls_cert, settings.siem_tls_key)
        try:
            transport = make_transport(parse_target(settings.siem_target), tls)
        except (TargetError, OSError, ssl.SSLError) as exc:  # a CA or client key unreadable
            raise ConfigError(f"SIEM feed {settings.siem_target}: {exc}") from exc
        feed = SiemFeed(engine, transport)
        writer.on_commit(feed.wake)
        feed.start()
        stack.push_async_callback(asyncio.to_thread, feed.stop)
    jobs = AuditJobs(retention, feed)
    registry.register(_JobMetrics(jobs))
    return jobs


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _JobMetrics(Collector):
    """Read at scrape time from the jobs' own state: nothing on the request path."""

    def __init__(self, jobs: AuditJobs) -> None:
        self.jobs = jobs

    def collect(self) -> Iterable[Metric]:
        feed = self.jobs.feed
        if feed is not None:
            status = feed.status
            for name, help_text, value in (
                ("sparkplane_siem_backlog_entries", "audit entries committed but not yet "
                 "delivered to the SIEM", status.backlog),
                ("sparkplane_siem_delivered_seq", "last audit entry delivered to the SIEM",
                 status.delivered_seq),
                ("sparkplane_siem_connected", "1 while connected to the SIEM receiver",
                 float(status.connected)),
                ("sparkplane_siem_sender", "1 on the replica that sends the feed",
                 float(status.role == "sender")),
            ):  # fmt: skip
                yield GaugeMetricFamily(name, help_text, value=value)
            yield CounterMetricFamily(
                "sparkplane_siem_sent", "messages written to the SIEM (resends included)",
                value=status.sent,
            )  # fmt: skip
        retention = self.jobs.retention
        if retention is not None and retention.last is not None:
            yield GaugeMetricFamily(
                "sparkplane_audit_retention_last_run_timestamp_seconds",
                "when the scheduled audit retention last finished (as this replica saw it)",
                value=retention.last.finished.timestamp(),
            )
