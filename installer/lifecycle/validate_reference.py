"""What `sparkplane validate` compares its figures with, and how: pass or warn, never fail.

Speed depends on the configuration and on the site's load, so a slow figure is a warning for
the operator to look at, never a failed validation. References per engine profile:

- `throughput` and `latency` (DGX Spark, Gemma 4 26B-A4B NVFP4): the seed's figures
  (`DESIGN.md` §2, community reports): one stream about 32 tok/s (55-61 with MTP, the latency
  profile), 16 streams about 18 tok/s each and 300 tok/s in total, prefill about 2,100 tok/s.
- `demo` (real vLLM on CPU, the tiny generated model, on the 2-core build machine): measured
  with `sparkplane validate` on that machine (docs/benchmarks.md, "Capacity through the
  control plane").

A figure passes when it is within TOLERANCE of its reference (above it for rates, below it for
times). The control plane's ratio to the engine alone has its own floor, the same on every
profile: admission must never leave the engine's batch emptier than it would be without us.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

TOLERANCE = 0.25  # the seed's figures are "about"; a quarter below them is worth a look
RATIO_FLOOR = 0.98  # gateway aggregate tok/s / direct aggregate tok/s (the bar)

# figure name -> reference value; names as validate_figures.measure_all makes them.
REFERENCES: dict[str, dict[str, float]] = {
    "throughput": {
        "decode_tok_s_1": 32.0,
        "aggregate_tok_s_16": 300.0,
        "per_stream_tok_s_16": 18.0,
        "prefill_long_tok_s": 2100.0,
    },
    "latency": {
        "decode_tok_s_1": 55.0,
        "prefill_long_tok_s": 2100.0,
    },
    # Measured on the build machine (2 cores, no GPU, shared: load average 6-10) with the demo
    # bundle, `sparkplane validate` 2026-12-06: one stream 47-58 tok/s, 8 streams 120-330 tok/s
    # in total (240 typical, through the control plane and direct), short-prompt TTFT 42-79 ms.
    "demo": {
        "decode_tok_s_1": 50.0,
        "aggregate_tok_s_8": 240.0,
        "ttft_short_ms": 60.0,
    },
}


@dataclass(frozen=True)
class Verdict:
    name: str
    value: float
    reference: float | None
    status: str  # "pass", "warn" or "info" (no reference for this figure on this profile)
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lower_is_better(name: str) -> bool:
    return name.endswith("_ms")


def judge(name: str, value: float, reference: float | None) -> Verdict:
    """One figure against its reference (None: reported, not judged)."""
    if name.startswith("ratio_"):
        ok = value >= RATIO_FLOOR
        detail = f"{value:.3f} of the engine alone ({'at least' if ok else 'below'} {RATIO_FLOOR})"
        return Verdict(name, value, RATIO_FLOOR, "pass" if ok else "warn", detail)
    if reference is None:
        return Verdict(name, value, None, "info", "no reference for this profile")
    if lower_is_better(name):
        ok = value <= reference * (1 + TOLERANCE)
        bound = f"at most {reference * (1 + TOLERANCE):g}"
    else:
        ok = value >= reference * (1 - TOLERANCE)
        bound = f"at least {reference * (1 - TOLERANCE):g}"
    detail = f"{value:g} against {reference:g} ({bound} passes)"
    return Verdict(name, value, reference, "pass" if ok else "warn", detail)


def judge_all(profile: str | None, figures: dict[str, float]) -> list[Verdict]:
    references = REFERENCES.get(profile or "", {})
    return [judge(name, value, references.get(name)) for name, value in figures.items()]
