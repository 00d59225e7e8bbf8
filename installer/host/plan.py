"""Engine profiles: vLLM flags computed from the model's config, the profile and the box's memory.

`make_plan` is what install and `sparkplane plan` share, so that install refuses exactly the
profiles the plan table shows as not fitting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from installer.host.kvcache import (
    GIB,
    AttentionShape,
    attention_shape,
    is_mixture_of_experts,
    quantization,
    weights_bytes,
)

PROFILES = ("demo", "throughput", "latency")
CONTEXT_LADDER = (4096, 8192, 16384, 32768, 65536, 131072, 262144)
# Unified memory is shared with the OS and the control plane: leave headroom (DESIGN.md §2).
GPU_MEMORY_UTILIZATION = 0.85
# Activations, CUDA graphs and the sampler live inside the utilisation share too.
ACTIVATION_RESERVE = 4 * GIB
DEMO_KVCACHE_GIB = 1
DEMO_MAX_MODEL_LEN = 512
DEMO_MAX_NUM_SEQS = 8
THROUGHPUT_MAX_NUM_SEQS = 32
LATENCY_MAX_MODEL_LEN = 32768
LATENCY_MAX_NUM_SEQS = 8
SPECULATIVE_TOKENS = 3
# Every profile's engine orders its waiting queue by the control plane's fair-queue tags.
SCHEDULING_ARGS = ["--scheduling-policy", "priority"]


class PlanError(ValueError):
    """The profile cannot run on this box with this model; the message says why."""


@dataclass(frozen=True)
class FitRow:
    context: int
    bytes_per_sequence: int
    sequences_that_fit: int


@dataclass
class EnginePlan:
    profile: str
    max_model_len: int
    max_num_seqs: int
    kv_dtype: str
    kv_budget_bytes: int
    weights_bytes: int
    shape: AttentionShape
    table: list[FitRow]
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # MTP speculative decoding with the bundle's draft model: tokens proposed per step (0: off).
    # The flag itself (`--speculative-config`) is rendered by templates/_engine.j2 from the draft's
    # installed directory, which is a per-host path like the model's.
    speculative_tokens: int = 0

    @property
    def engine_queue(self) -> int:
        """Requests the control plane lets the engine hold waiting beyond its batch.

        vLLM replaces a finished sequence from its own queue at the next step; with none
        there, the slot waits for the next request to cross the gateway and be tokenized
        (docs/benchmarks.md, "Capacity through the control plane"). The queue's order stays
        the control plane's: the engine serves it by the priority tags it sends.
        """
        return max(2, self.max_num_seqs // 4)


def fit_table(shape: AttentionShape, kv_dtype: str, budget: int) -> list[FitRow]:
    """How many concurrent sequences fit at each context length of the ladder."""
    contexts = [c for c in CONTEXT_LADDER if c < shape.max_context] + [shape.max_context]
    rows = []
    for context in contexts:
        per_seq = shape.bytes_per_sequence(context, kv_dtype)
        rows.append(FitRow(context, per_seq, max(budget, 0) // per_seq))
    return rows


def _model_specific(model_dir: Path, shape: AttentionShape) -> tuple[list[str], dict[str, str]]:
    """Flags a model family needs (Gemma 4 parsers, NVFP4 through Marlin on sm_121)."""
    args: list[str] = []
    env: dict[str, str] = {}
    if shape.model_type.startswith("gemma4"):
        args += ["--enable-auto-tool-choice", "--tool-call-parser", "gemma4"]
        args += ["--reasoning-parser", "gemma4"]
    if quantization(model_dir) == "NVFP4":
        env["VLLM_NVFP4_GEMM_BACKEND"] = "marlin"
        if is_mixture_of_experts(model_dir):
            args += ["--moe-backend", "marlin"]
    return args, env


def _demo_plan(model_dir: Path, shape: AttentionShape, draft_dir: Path | None) -> EnginePlan:
    budget = DEMO_KVCACHE_GIB * GIB
    max_len = min(DEMO_MAX_MODEL_LEN, shape.max_context)
    per_seq = shape.bytes_per_sequence(max_len, "float32")
    table = [FitRow(max_len, per_seq, budget // per_seq)]
    if table[0].sequences_that_fit < DEMO_MAX_NUM_SEQS:
        raise PlanError(
            f"demo profile: {DEMO_MAX_NUM_SEQS} sequences of {max_len} tokens need "
            f"{DEMO_MAX_NUM_SEQS * table[0].bytes_per_sequence} bytes of KV cache, "
            f"the CPU cache is {budget} bytes; the demo profile is for tiny models"
        )
    args = ["--max-model-len", str(max_len), "--max-num-seqs", str(DEMO_MAX_NUM_SEQS)]
    args += ["--dtype", "float32", "--enforce-eager", *SCHEDULING_ARGS]
    # The Spark profiles' own model flags: the Gemma 4 parsers (docs/installer.md, demo vs Spark).
    model_args, _ = _model_specific(model_dir, shape)
    env = {"VLLM_CPU_KVCACHE_SPACE": str(DEMO_KVCACHE_GIB)}
    return EnginePlan(
        "demo",
        max_len,
        DEMO_MAX_NUM_SEQS,
        "float32",
        budget,
        weights_bytes(model_dir) + (weights_bytes(draft_dir) if draft_dir else 0),
        shape,
        table,
        args + model_args,
        env,
        SPECULATIVE_TOKENS if draft_dir is not None else 0,
    )


def make_plan(
    model_dir: Path,
    profile: str,
    memory_bytes: int,
    draft_dir: Path | None = None,
) -> EnginePlan:
    """Flags for `profile`; raises PlanError when the profile cannot fit in `memory_bytes`."""
    if profile not in PROFILES:
        raise PlanError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    shape = attention_shape(model_dir)
    if profile == "demo":
        return _demo_plan(model_dir, shape, draft_dir)
    weights = weights_bytes(model_dir) + (weights_bytes(draft_dir) if draft_dir else 0)
    budget = int(memory_bytes * GPU_MEMORY_UTILIZATION) - weights - ACTIVATION_RESERVE
    table = fit_table(shape, "fp8", budget)
    if profile == "throughput":
        seqs = THROUGHPUT_MAX_NUM_SEQS
        fitting = [row for row in table if row.sequences_that_fit >= seqs]
        if not fitting:
            raise PlanError(_no_fit_message(profile, seqs, table[0], budget, weights))
        max_len = fitting[-1].context
    else:
        seqs = LATENCY_MAX_NUM_SEQS
        max_len = min(LATENCY_MAX_MODEL_LEN, shape.max_context)
        row = FitRow(max_len, shape.bytes_per_sequence(max_len, "fp8"), 0)
        if budget < seqs * row.bytes_per_sequence:
            raise PlanError(_no_fit_message(profile, seqs, row, budget, weights))
    args = ["--max-model-len", str(max_len), "--max-num-seqs", str(seqs)]
    args += ["--gpu-memory-utilization", str(GPU_MEMORY_UTILIZATION), "--kv-cache-dtype", "fp8"]
    args += SCHEDULING_ARGS
    speculative = SPECULATIVE_TOKENS if profile == "latency" and draft_dir is not None else 0
    extra_args, env = _model_specific(model_dir, shape)
    return EnginePlan(
        profile,
        max_len,
        seqs,
        "fp8",
        budget,
        weights,
        shape,
        table,
        args + extra_args,
        env,
        speculative,
    )


def _no_fit_message(profile: str, seqs: int, row: FitRow, budget: int, weights: int) -> str:
    need = seqs * row.bytes_per_sequence
    return (
        f"{profile} profile does not fit: {seqs} sequences of {row.context} tokens need "
        f"{need / GIB:.1f} GiB of KV cache, but only {max(budget, 0) / GIB:.1f} GiB remain after "
        f"{weights / GIB:.1f} GiB of weights, {ACTIVATION_RESERVE / GIB:.0f} GiB of activations "
        f"and {1 - GPU_MEMORY_UTILIZATION:.0%} headroom"
    )
