"""The figures of `sparkplane validate`: measured through the control plane and straight at the
engine, with the same client and the same requests, so their ratio is the control plane's cost.

Streams run in threads (one `http.client` connection each); all streams of one level start
together, each makes `repeats` requests back to back, and all ask for the same number of tokens
with `ignore_eos`, so every level measures a full batch for its whole length. Aggregate tok/s =
all completion tokens / wall time of the level; per-stream tok/s = the mean of each request's
decode rate after its first token.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from installer.lifecycle.validate_client import (
    CallFailed,
    StreamTiming,
    Target,
    request_json,
    stream_chat,
)

# The long prompt is sized from the engine's context, within these bounds.
LONG_PROMPT_MAX_TOKENS = 8192
PROMPT_WORD = "data "
CALIBRATION_WORDS = 200
# Chat template and instruction around the words, in tokens (the demo's template adds ~20).
PROMPT_OVERHEAD_TOKENS = 64


@dataclass(frozen=True)
class Plan:
    """What to measure: short runs for `--quick`, the issue's full ladder otherwise."""

    levels: tuple[int, ...]
    output_tokens: int
    long_prompt_tokens: int
    repeats: int  # requests each stream makes, back to back (one is too few to judge by)

    @classmethod
    def for_engine(cls, max_num_seqs: int, max_model_len: int, quick: bool) -> Plan:
        ladder = (1, max_num_seqs) if quick else (1, 4, 16, max_num_seqs)
        output = 32 if quick else 128
        long_tokens = min(LONG_PROMPT_MAX_TOKENS, max_model_len // 2)
        return cls(tuple(sorted(set(ladder))), output, max(long_tokens, 16), 2 if quick else 3)


@dataclass(frozen=True)
class Level:
    """One concurrency level against one target."""

    concurrency: int
    aggregate_tok_s: float
    per_stream_tok_s: float
    ttft_ms: float  # median over the streams

    def as_dict(self) -> dict[str, float]:
        return {
            "aggregate_tok_s": round(self.aggregate_tok_s, 2),
            "per_stream_tok_s": round(self.per_stream_tok_s, 2),
            "ttft_ms": round(self.ttft_ms, 1),
        }


def _body(model: str, words: int, max_tokens: int) -> dict[str, Any]:
    content = "Summarise: " + PROMPT_WORD * words
    return {"model": model, "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}  # fmt: skip


def measure_level(
    target: Target, model: str, concurrency: int, output_tokens: int, repeats: int = 1
) -> Level:
    body = _body(model, 48, output_tokens)

    def stream(_: int) -> list[StreamTiming]:
        return [stream_chat(target, body)[0] for _ in range(repeats)]

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        timings = [t for per_stream in pool.map(stream, range(concurrency)) for t in per_stream]
    wall = max(t.finished for t in timings) - min(t.started for t in timings)
    tokens = sum(t.completion_tokens for t in timings)
    return Level(
        concurrency,
        tokens / wall if wall > 0 else 0.0,
        statistics.fmean(t.decode_tok_s for t in timings),
        statistics.median(t.ttft for t in timings) * 1000,
    )


def measure_prefill(target: Target, model: str, words: int) -> tuple[float, float]:
    """(TTFT in ms, prefill tok/s) of one prompt of about `words` tokens, one output token."""
    timing, _ = stream_chat(target, _body(model, words, 1))
    return timing.ttft * 1000, timing.prompt_tokens / timing.ttft if timing.ttft > 0 else 0.0


def words_for(direct: Target, model: str, tokens: int) -> int:
    """How many prompt words make about `tokens` tokens, counted by the engine's /tokenize."""
    body = {"model": model, "prompt": PROMPT_WORD * CALIBRATION_WORDS}
    try:
        counted = int(request_json(direct, "POST", "/tokenize", body)["count"])
    except (CallFailed, KeyError, TypeError, ValueError):
        counted = 2 * CALIBRATION_WORDS  # no /tokenize: assume two tokens a word
    per_word = max(counted / CALIBRATION_WORDS, 0.1)
    return max(int((tokens - PROMPT_OVERHEAD_TOKENS) / per_word), 4)


def measure_all(
    gateway: Target, direct: Target, model: str, plan: Plan, step: Callable[[str], None]
) -> dict[str, Any]:
    """Every figure, gateway and direct, level by level; `step(label)` after each measurement."""
    figures: dict[str, float] = {}
    for name, words in (("short", 16), ("long", words_for(direct, model, plan.long_prompt_tokens))):
        ttft, rate = measure_prefill(gateway, model, words)
        figures[f"ttft_{name}_ms"], figures[f"prefill_{name}_tok_s"] = ttft, rate
        step(f"prefill, {name} prompt")
    curve = []
    for concurrency in plan.levels:
        levels = {}
        for label, target in (("gateway", gateway), ("direct", direct)):
            levels[label] = measure_level(
                target, model, concurrency, plan.output_tokens, plan.repeats
            )
            step(f"{concurrency} stream(s), {label}")
        through, alone = levels["gateway"], levels["direct"]
        ratio = through.aggregate_tok_s / alone.aggregate_tok_s if alone.aggregate_tok_s else 0.0
        curve.append({"concurrency": concurrency, "gateway": through.as_dict(),
                      "direct": alone.as_dict(), "ratio": round(ratio, 3)})  # fmt: skip
        figures[f"aggregate_tok_s_{concurrency}"] = through.aggregate_tok_s
        figures[f"per_stream_tok_s_{concurrency}"] = through.per_stream_tok_s
        figures[f"ratio_{concurrency}"] = ratio
        if concurrency == 1:
            figures["decode_tok_s_1"] = through.per_stream_tok_s
    return {"figures": {k: round(v, 3) for k, v in figures.items()}, "curve": curve}


def step_count(plan: Plan) -> int:
    """How many `step` calls `measure_all` makes (the progress bar's total)."""
    return 2 + 2 * len(plan.levels)
