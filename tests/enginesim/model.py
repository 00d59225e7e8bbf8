"""The simulator's options, its latency model and its (deterministic) token arithmetic.

Calibrated on DESIGN.md section 2 (Gemma 4 26B-A4B NVFP4 on a DGX Spark): prefill about
2,100 tok/s; decode about 32 tok/s for one stream, about 18 tok/s per stream at 16 streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

# Token text cycles through these words: one word = one token, so counts are easy to check.
_TEXT = (
    "the box sells concurrency not single stream speed so every tenant gets a fair share "
    "of the engine while decode stays bound by memory bandwidth"
)
WORDS = tuple(_TEXT.split())


@dataclass
class SimOptions:
    """Everything `start_simulator(**opts)` and `python -m tests.enginesim` accept."""

    host: str = "127.0.0.1"
    port: int = 0
    models: tuple[str, ...] = ("sim-model",)
    max_num_seqs: int = 32
    scheduling_policy: str = "fcfs"  # or "priority": the waiting queue by the body's `priority`
    time_scale: float = 1.0  # multiplies every modelled duration; 0.01 = 100x faster
    prefill_tps: float = 2100.0
    decode_tps_single: float = 32.0
    decode_tps_at_16: float = 18.0
    default_max_tokens: int = 64  # when the request sets no max_tokens
    output_tokens: int | None = None  # natural answer length (finish "stop"); None = max_tokens
    max_model_len: int = 32768
    reasoning_tokens: int = 0  # chat answers start with this many tokens in `reasoning`
    embeddings: bool = True
    embedding_dim: int = 16
    tenant_header: str = "x-sparkplane-tenant"
    startup_delay_s: float = 0.0  # refuse connections for this long after start (model loading)
    keepalive_s: float = 5.0  # idle keep-alive connections closed after this, as vLLM (uvicorn)
    faults: dict[str, Any] = field(default_factory=dict)  # initial Faults, see faults.py

    def __post_init__(self) -> None:
        if isinstance(self.models, str):
            self.models = tuple(m.strip() for m in self.models.split(",") if m.strip())
        if not self.models:
            raise ValueError("models: at least one served model name is required")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError(
                f"scheduling_policy must be fcfs or priority, got {self.scheduling_policy}"
            )
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {self.time_scale}")
        positive = ("prefill_tps", "decode_tps_single", "decode_tps_at_16")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.decode_tps_at_16 > self.decode_tps_single:
            raise ValueError("decode_tps_at_16 cannot exceed decode_tps_single")

    @classmethod
    def from_kwargs(cls, **opts: Any) -> SimOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise TypeError(f"unknown simulator option(s) {unknown}; known: {sorted(known)}")
        return cls(**opts)


class LatencyModel:
    """Per-stream decode rate r(n) = r1 / (1 + a (n - 1)), through (1, r1) and (16, r16).

    This hyperbola is the usual shape of a bandwidth-bound batch: the total n * r(n) keeps
    growing but saturates (32 -> 288 tok/s at 16 streams -> about 390 tok/s at 32).
    """

    def __init__(self, opts: SimOptions) -> None:
        self.scale = opts.time_scale
        self.prefill_tps = opts.prefill_tps
        self.single = opts.decode_tps_single
        self.slope = (opts.decode_tps_single / opts.decode_tps_at_16 - 1.0) / 15.0

    def decode_rate(self, running: int) -> float:
        """Tokens per second of one stream when `running` sequences decode together."""
        return self.single / (1.0 + self.slope * (max(running, 1) - 1))

    def token_interval(self, running: int) -> float:
        """Wall seconds between two tokens of one stream (time-scaled)."""
        return self.scale / self.decode_rate(running)

    def prefill_seconds(self, prompt_tokens: int) -> float:
        return self.scale * prompt_tokens / self.prefill_tps


def text_tokens(text: str) -> int:
    """Rough tokenizer: about four characters per token, at least one for non-empty text."""
    return math.ceil(len(text) / 4) if text else 0


def content_text(content: Any) -> str:
    """Text of a chat message's content: a string or a list of OpenAI content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    raise ValueError("message content must be a string, a list of parts or null")


def chat_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Tokens of a chat prompt: text plus a few template tokens per message, like a template."""
    return 2 + sum(4 + text_tokens(content_text(m.get("content"))) for m in messages)


def word_pieces(count: int) -> list[str]:
    """`count` output tokens of plain text."""
    return [(" " if i else "") + WORDS[i % len(WORDS)] for i in range(count)]


def json_pieces(count: int) -> list[str]:
    """`count` output tokens forming a JSON object (when count >= 3; shorter is cut, like an
    engine hitting max_tokens)."""
    pieces = ['{"text": "', *word_pieces(max(count - 2, 0)), '"}']
    return pieces[:count]
