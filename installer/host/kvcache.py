"""KV-cache arithmetic read from a model's `config.json` (DESIGN.md §2: never hard-coded).

Gemma 4 mixes sliding-window layers (many KV heads, capped at the window) with full-attention
layers (few KV heads, wider heads, growing with the context). The config names the pattern in
`layer_types`; full layers may carry their own `num_global_key_value_heads` / `global_head_dim`.
Models without `layer_types` (Llama, the demo model) are all full attention.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KV_DTYPE_BYTES = {"fp8": 1, "bf16": 2, "fp16": 2, "float32": 4}
GIB = 1024**3


class ModelConfigError(ValueError):
    """config.json is missing or lacks a field the budget needs."""


@dataclass(frozen=True)
class AttentionShape:
    """KV-relevant shape of one model: layer counts, KV heads and head sizes per layer kind."""

    model_type: str
    sliding_layers: int
    sliding_kv_heads: int
    sliding_head_dim: int
    sliding_window: int
    full_layers: int
    full_kv_heads: int
    full_head_dim: int
    max_context: int

    def bytes_per_sequence(self, context: int, kv_dtype: str) -> int:
        """KV bytes one sequence of `context` tokens holds (K and V, all layers)."""
        width = KV_DTYPE_BYTES[kv_dtype]
        sliding_tokens = min(context, self.sliding_window)
        sliding = self.sliding_layers * self.sliding_kv_heads * self.sliding_head_dim
        full = self.full_layers * self.full_kv_heads * self.full_head_dim
        return 2 * width * (sliding * sliding_tokens + full * context)

    def bytes_per_token(self, kv_dtype: str) -> tuple[int, int]:
        """(sliding, full) bytes per token: the DESIGN.md §2 figures, for display."""
        width = KV_DTYPE_BYTES[kv_dtype]
        sliding = 2 * width * self.sliding_layers * self.sliding_kv_heads * self.sliding_head_dim
        full = 2 * width * self.full_layers * self.full_kv_heads * self.full_head_dim
        return sliding, full


def _require_int(section: dict[str, Any], key: str, source: Path) -> int:
    value = section.get(key)
    if not isinstance(value, int) or value <= 0:
        raise ModelConfigError(f"{source}: '{key}' must be a positive integer, got {value!r}")
    return value


def read_model_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelConfigError(f"{path}: the model has no config.json") from exc
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(loaded, dict):
        raise ModelConfigError(f"{path}: expected a JSON object")
    return loaded


def attention_shape(model_dir: Path) -> AttentionShape:
    """Read the layer pattern and KV shape; multimodal configs keep them in `text_config`."""
    config = read_model_config(model_dir)
    source = model_dir / "config.json"
    text = config.get("text_config") or config
    layers = _require_int(text, "num_hidden_layers", source)
    heads = _require_int(text, "num_attention_heads", source)
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or _require_int(text, "hidden_size", source) // heads)
    layer_types = text.get("layer_types") or ["full_attention"] * layers
    if len(layer_types) != layers:
        raise ModelConfigError(
            f"{source}: layer_types lists {len(layer_types)} layers, num_hidden_layers is {layers}"
        )
    sliding = sum(1 for kind in layer_types if kind == "sliding_attention")
    window = int(text.get("sliding_window") or 0)
    if sliding and window <= 0:
        raise ModelConfigError(f"{source}: sliding layers present but no 'sliding_window'")
    return AttentionShape(
        model_type=str(text.get("model_type") or config.get("model_type") or "unknown"),
        sliding_layers=sliding,
        sliding_kv_heads=kv_heads,
        sliding_head_dim=head_dim,
        sliding_window=window,
        full_layers=layers - sliding,
        full_kv_heads=int(text.get("num_global_key_value_heads") or kv_heads),
        full_head_dim=int(text.get("global_head_dim") or head_dim),
        max_context=int(text.get("max_position_embeddings") or 0) or 4096,
    )


def quantization(model_dir: Path) -> str | None:
    """The checkpoint's quantisation algorithm (e.g. 'NVFP4'), from hf_quant_config.json."""
    for name in ("hf_quant_config.json", "config.json"):
        path = model_dir / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        section = data.get("quantization") or data.get("quantization_config") or {}
        algo = section.get("quant_algo") or section.get("quant_method")
        if algo:
            return str(algo).upper()
    return None


def weights_bytes(model_dir: Path) -> int:
    """Size of the weight files: what the engine loads before any KV cache."""
    patterns = ("*.safetensors", "*.bin", "*.pt")
    return sum(p.stat().st_size for pattern in patterns for p in model_dir.glob(pattern))


def is_mixture_of_experts(model_dir: Path) -> bool:
    config = read_model_config(model_dir)
    text = config.get("text_config") or config
    return any(int(text.get(key) or 0) > 1 for key in ("num_experts", "num_local_experts"))
