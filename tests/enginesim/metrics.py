"""Prometheus metrics under vLLM's names (one registry per simulator, so several can coexist)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# vLLM's buckets for request-level latencies (seconds).
_BUCKETS = "0.001 0.005 0.01 0.02 0.04 0.06 0.08 0.1 0.25 0.5 0.75 1 2.5 5 7.5 10 20 40 80 160 640"
LATENCY_BUCKETS = tuple(float(b) for b in _BUCKETS.split())


class VllmMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"model_name": model_name, "engine": "0"}
        names = list(labels)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, names, registry=self.registry)

        self._running = gauge("vllm:num_requests_running", "Requests in model execution batches.")
        self._waiting = gauge("vllm:num_requests_waiting", "Requests waiting to be processed.")
        self._kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent.")
        self._running_g = self._running.labels(**labels)
        self._waiting_g = self._waiting.labels(**labels)
        self._kv_usage_g = self._kv_usage.labels(**labels)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens",
            "Number of prefill tokens processed.",
            names,
            registry=self.registry,
        ).labels(**labels)
        self.generation_tokens = Counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            names,
            registry=self.registry,
        ).labels(**labels)
        self._success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*names, "finished_reason"],
            registry=self.registry,
        )
        self._labels = labels

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, names, buckets=LATENCY_BUCKETS, registry=self.registry)

        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds."
        ).labels(**labels)
        self.inter_token = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds."
        ).labels(**labels)
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds."
        ).labels(**labels)
        self.queue_time = histogram(
            "vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase."
        ).labels(**labels)
        self.prompt_hist = Histogram(
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            names,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000),
            registry=self.registry,
        ).labels(**labels)

    @property
    def success(self) -> _SuccessLabels:
        return _SuccessLabels(self._success, self._labels)

    def set_queue(self, running: int, waiting: int, max_num_seqs: int) -> None:
        self._running_g.set(running)
        self._waiting_g.set(waiting)
        self._kv_usage_g.set(running / max_num_seqs)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SuccessLabels:
    """`metrics.success.labels(finished_reason=...)` with the model labels filled in."""

    def __init__(self, counter: Counter, labels: dict[str, str]) -> None:
        self._counter = counter
        self._labels = labels

    def labels(self, finished_reason: str) -> Counter:
        return self._counter.labels(**self._labels, finished_reason=finished_reason)
