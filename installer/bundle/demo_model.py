"""A tiny, deterministic LlamaForCausalLM for the CPU demo, generated without torch.

Random float32 weights from a fixed seed (numpy), saved with safetensors; a byte-level BPE
tokenizer (~400 tokens) trained on a few KB of text shipped in the repo; a ChatML chat template.
Every build writes byte-identical files, so the demo bundle's hashes are stable.
Needs the `staging` extra (numpy, safetensors, tokenizers), imported lazily.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SEED = 20261126
VOCAB_SIZE = 400
HIDDEN = 128
INTERMEDIATE = 256
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 32  # the smallest head size vLLM's CPU attention backend supports
MAX_POSITIONS = 512
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def generate_demo_model(out_dir: Path, corpus: Path) -> list[Path]:
    """Write config, tokenizer and weights into `out_dir`; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = _write_tokenizer(out_dir, corpus.read_text(encoding="utf-8"))
    ids = {token: vocab.token_to_id(token) for token in SPECIAL_TOKENS}
    config = _config(vocab.get_vocab_size(), ids["<|endoftext|>"], ids["<|im_end|>"])
    _write_json(out_dir / "config.json", config)
    _write_json(
        out_dir / "generation_config.json",
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]},
    )
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(ids))
    _write_json(
        out_dir / "special_tokens_map.json",
        {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    )
    _write_weights(out_dir / "model.safetensors", config)
    return sorted(path for path in out_dir.iterdir() if path.is_file())


def _write_tokenizer(out_dir: Path, text: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in text.splitlines() if line.strip()]
    tokenizer.train_from_iterator(lines, trainer=trainer)
    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=True)
    return tokenizer


def _config(vocab_size: int, bos: int, eos: int) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": bos,
    }


def _tokenizer_config(ids: dict[str, int]) -> dict[str, Any]:
    added = {
        str(token_id): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token, token_id in sorted(ids.items(), key=lambda item: item[1])
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHATML_TEMPLATE,
    }


def _write_weights(path: Path, config: dict[str, Any]) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(SEED)

    def normal(*shape: int) -> Any:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)).astype("<f4")

    vocab, q_out, kv_out = config["vocab_size"], HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    tensors: dict[str, Any] = {"model.embed_tokens.weight": normal(vocab, HIDDEN)}
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}."
        tensors[prefix + "self_attn.q_proj.weight"] = normal(q_out, HIDDEN)
        tensors[prefix + "self_attn.k_proj.weight"] = normal(kv_out, HIDDEN)
        tensors[prefix + "self_attn.v_proj.weight"] = normal(kv_out, HIDDEN)
        tensors[prefix + "self_attn.o_proj.weight"] = normal(HIDDEN, q_out)
        tensors[prefix + "mlp.gate_proj.weight"] = normal(INTERMEDIATE, HIDDEN)
        tensors[prefix + "mlp.up_proj.weight"] = normal(INTERMEDIATE, HIDDEN)
        tensors[prefix + "mlp.down_proj.weight"] = normal(HIDDEN, INTERMEDIATE)
        tensors[prefix + "input_layernorm.weight"] = np.ones(HIDDEN, dtype="<f4")
        tensors[prefix + "post_attention_layernorm.weight"] = np.ones(HIDDEN, dtype="<f4")
    tensors["model.norm.weight"] = np.ones(HIDDEN, dtype="<f4")
    tensors["lm_head.weight"] = normal(vocab, HIDDEN)
    save_file(tensors, str(path), metadata={"format": "pt"})


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
