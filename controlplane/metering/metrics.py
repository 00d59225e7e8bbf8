"""Prometheus metrics, one registry per app (tests build many apps in one process).

Counters and histograms are updated on the request path; in-flight, queued and engine gauges
are read from the live admission and engine state at scrape time instead, which costs the
request path nothing and can never drift from the truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class _LiveGauges(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state = self._read()
        in_flight = GaugeMetricFamily(
            "sparkplane_tenant_in_flight", "requests of the tenant at an engine", labels=["tenant"]
        )
        queued = GaugeMetricFamily(
            "sparkplane_tenant_queued", "requests of the tenant waiting", labels=["tenant"]
        )
        for name, (running, waiting) in state.get("tenants", {}).items():
            in_flight.add_metric([name], running)
            queued.add_metric([name], waiting)
        healthy = GaugeMetricFamily(
            "sparkplane_engine_healthy",
            "1 if the engine passes its health check",
            labels=["engine"],
        )
        engine_in_flight = GaugeMetricFamily(
            "sparkplane_engine_in_flight", "requests in flight at the engine", labels=["engine"]
        )
        capacity = GaugeMetricFamily(
            "sparkplane_engine_capacity", "most requests in flight allowed", labels=["engine"]
        )
        for url, (is_healthy, running, cap) in state.get("engines", {}).items():
            healthy.add_metric([url], 1.0 if is_healthy else 0.0)
            engine_in_flight.add_metric([url], running)
            capacity.add_metric([url], cap)
        yield from (in_flight, queued, healthy, engine_in_flight, capacity)


@dataclass(frozen=True)
class TenantMetrics:
    """One tenant's metric children, resolved once: `labels()` costs more than the update."""

    admitted: Any
    queue_wait: Any
    prompt_tokens: Any
    completion_tokens: Any
    ttft: Any
    latency: Any


class Metrics:
    def __init__(self) -> None:
        self._tenants: dict[str, TenantMetrics] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.admitted = Counter("sparkplane_admitted", "requests admitted", ["tenant"], registry=r)
        self.rejected = Counter(
            "sparkplane_rejected", "requests rejected, by limit", ["tenant", "reason"], registry=r
        )
        self.requests = Counter(
            "sparkplane_requests",
            "finished API requests",
            ["tenant", "endpoint", "outcome"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "sparkplane_prompt_tokens", "prompt tokens", ["tenant"], registry=r
        )
        self.completion_tokens = Counter(
            "sparkplane_completion_tokens", "completion tokens", ["tenant"], registry=r
        )
        self.queue_wait = Histogram(
            "sparkplane_queue_wait_seconds",
            "time from arrival to admission",
            ["tenant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "sparkplane_time_to_first_token_seconds",
            "arrival to first streamed byte",
            ["tenant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "sparkplane_request_duration_seconds",
            "arrival to last byte",
            ["tenant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.auth_failures = Counter(
            "sparkplane_auth_failures", "requests refused for a bad key", ["reason"], registry=r
        )

    def tenant(self, name: str) -> TenantMetrics:
        children = self._tenants.get(name)
        if children is None:
            children = self._tenants[name] = TenantMetrics(
                admitted=self.admitted.labels(name),
                queue_wait=self.queue_wait.labels(name),
                prompt_tokens=self.prompt_tokens.labels(name),
                completion_tokens=self.completion_tokens.labels(name),
                ttft=self.ttft.labels(name),
                latency=self.latency.labels(name),
            )
        return children

    def watch(self, read: Callable[[], dict[str, Any]]) -> None:
        """Register the scrape-time reader of admission and engine state."""
        self.registry.register(_LiveGauges(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)
