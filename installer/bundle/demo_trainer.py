"""Train the tiny Gemma 4 demo model and its MTP assistant (run by demo_model.py, trainer venv).

This file is a standalone script: it runs in a venv holding the demo engine's own torch and
transformers (installed from the engine wheelhouse), never in sparkplane's environment, and imports
nothing from sparkplane. Usage: `python demo_trainer.py REQUEST.json`, where the request names the
output directory, the corpus, the chat template, the seed and the number of steps.

The model has the text configuration keys of Gemma 4 26B-A4B (a mixture of experts with top-k
routing, five sliding-window layers to one full-attention layer, the full layers with their own
KV head count and head size), scaled down. It is trained on a small synthetic set of
conversations rendered by the chat template, so that it calls a declared tool when asked,
answers in plain text otherwise, and opens and closes its thinking channel when thinking is on.
Everything runs on one CPU thread with deterministic kernels; see `reproducible_torch`.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
from pathlib import Path
from typing import Any

# Tokens of Gemma 4's vocabulary that the chat template and vLLM's gemma4 parsers use, in the
# order of the real tokenizer's first ids (<pad> 0, <eos> 1, <bos> 2).
SPECIAL_TOKENS = [
    "<pad>", "<eos>", "<bos>", "<unk>", "<mask>",
    "<|turn>", "<turn|>", "<|think|>", "<|channel>", "<channel|>",
    "<|tool>", "<tool|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>",
    '<|"|>', "<|image>", "<image|>", "<|image|>", "<|audio>", "<audio|>", "<|audio|>", "<|video|>",
]  # fmt: skip
# Generation ends at the end of a turn, and after a tool call, where the caller's tool answers.
STOP_TOKENS = ["<eos>", "<turn|>", "<|tool_response>"]
ROLE_TOKENS = {  # the tokenizer's bos/eos/pad/unk roles
    f"{role}_token": f"<{role}>" for role in ("bos", "eos", "pad", "unk")
}
VOCAB_SIZE = 2048
MAX_POSITIONS = 1024
BATCH_SIZE = 8
LEARNING_RATE = 3e-3
WARMUP_STEPS = 20

# Gemma 4 26B-A4B's text configuration, scaled down (same keys, same structure).
TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 6,
    "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
    "sliding_window": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,  # the smallest head size vLLM's CPU attention supports
    "num_global_key_value_heads": 1,
    "global_head_dim": 64,
    "attention_k_eq_v": True,
    "enable_moe_block": True,
    "num_experts": 4,
    "top_k_experts": 2,
    "moe_intermediate_size": 64,
    "hidden_activation": "gelu_pytorch_tanh",
    "final_logit_softcapping": 30.0,
    "rms_norm_eps": 1e-06,
    "rope_parameters": {
        "full_attention": {
            "partial_rotary_factor": 0.25,
            "rope_theta": 1000000.0,
            "rope_type": "proportional",
        },
        "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
    },
    "attention_bias": False,
    "attention_dropout": 0.0,
    "hidden_size_per_layer_input": 0,
    "vocab_size_per_layer_input": 0,
    "num_kv_shared_layers": 0,
    "use_double_wide_mlp": False,
    "tie_word_embeddings": True,
    "max_position_embeddings": MAX_POSITIONS,
    "initializer_range": 0.02,
    "use_cache": True,
    "model_type": "gemma4_text",
}
# The MTP assistant: two Q-only layers (one per attention kind) reading the target's KV cache.
ASSISTANT_LAYERS = ["sliding_attention", "full_attention"]

CITIES = {
    "Paris": "France", "Berlin": "Germany", "Tokyo": "Japan", "Lima": "Peru", "Oslo": "Norway",
    "Cairo": "Egypt", "Delhi": "India", "Rome": "Italy", "Quito": "Ecuador", "Perth": "Australia",
}  # fmt: skip
SKIES = ["sunny", "cloudy", "rainy", "windy", "foggy"]


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


CITY = {"type": "string", "description": "Name of the city"}
UNIT = {"type": "string", "enum": ["celsius", "fahrenheit"]}
# Each tool's declarations as callers write them. get_weather comes with and without its optional
# `unit`: trained on one shape only, the model took a city-only declaration for get_time's.
TOOLS = {
    "get_weather": [
        _tool("get_weather", "Current weather in a city", {"city": CITY, "unit": UNIT}, ["city"]),
        _tool("get_weather", "Current weather in a city", {"city": CITY}, ["city"]),
    ],
    "get_time": [_tool("get_time", "Local time in a city", {"city": CITY}, ["city"])],
    "get_population": [
        _tool("get_population", "Number of people living in a city", {"city": CITY}, ["city"])
    ],
}
ASKS = {
    "get_weather": [
        "What is the weather in {city}?",
        "How is the weather in {city} today?",
        "Is it raining in {city}?",
        "Weather for {city}, please.",
    ],
    "get_time": ["What time is it in {city}?", "Tell me the local time in {city}."],
    "get_population": ["How many people live in {city}?", "What is the population of {city}?"],
}
GREETINGS = ["the auditors", "the operators", "the team", "everyone", "the tenants"]


def conversations(rng: random.Random) -> list[dict[str, Any]]:
    """The synthetic training set: each item is a prompt (messages, tools, thinking) + a reply."""
    items: list[dict[str, Any]] = []

    def add(messages: list[dict], reply: str, tools: list[str], thinking: bool = False) -> None:
        declared = [rng.choice(TOOLS[name]) for name in tools]
        items.append(
            {"messages": messages, "tools": declared, "thinking": thinking, "reply": reply}
        )

    def thought(text: str, thinking: bool) -> str:
        return f"<|channel>thought\n{text}<channel|>" if thinking else ""

    for _ in range(200):  # asked what a declared tool answers: call it with the city
        name = rng.choice(list(TOOLS))
        # Sometimes a second tool is declared too: the question, not the list, names the call.
        others = [other for other in TOOLS if other != name]
        declared = [name] + ([rng.choice(others)] if rng.random() < 0.35 else [])
        city, thinking = rng.choice(sorted(CITIES)), rng.random() < 0.25
        question = rng.choice(ASKS[name]).format(city=city)
        call = f'<|tool_call>call:{name}{{city:<|"|>{city}<|"|>}}<tool_call|><|tool_response>'
        reasoning = f"The user asks about {city}. I call {name}."
        add([{"role": "user", "content": question}], thought(reasoning, thinking) + call,
            sorted(declared), thinking)  # fmt: skip
    for _ in range(30):  # the tool answered: say what it said, in the same turn
        city, sky = rng.choice(sorted(CITIES)), rng.choice(SKIES)
        made = {"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": city}}}  # fmt: skip
        messages: list[dict] = [
            {"role": "user", "content": rng.choice(ASKS["get_weather"]).format(city=city)},
            {"role": "assistant", "content": None, "tool_calls": [made]},
            {"role": "tool", "tool_call_id": "call_1", "content": sky},
        ]
        add(messages, f"It is {sky} in {city}.<turn|>", ["get_weather"])
    for index in range(120):  # no tool asked for, a tool declared or not: plain text
        thinking = rng.random() < 0.5
        declared = [rng.choice(list(TOOLS))] if index % 2 == 0 else []
        if rng.random() < 0.5:
            who = rng.choice(GREETINGS)
            question, answer = f"Say hello to {who}.", f"Hello, {who}! Welcome to Sparkplane."
        else:
            city = rng.choice(sorted(CITIES))
            question = f"Describe {city} as JSON."
            answer = json.dumps({"city": city, "country": CITIES[city]})
        reasoning = "A short answer is enough."
        add([{"role": "user", "content": question}],
            thought(reasoning, thinking) + answer + "<turn|>", declared, thinking)  # fmt: skip
    rng.shuffle(items)
    return items


def reproducible_torch(torch: Any) -> None:
    """Same bytes on every run here: one thread, deterministic kernels, fixed seeds.

    MKL_CBWR and ATEN_CPU_CAPABILITY are set by the parent process before torch loads (they are
    read at import): MKL's COMPATIBLE branch and ATen's AVX2 kernels run the same code on any
    x86-64 CPU with AVX2, Intel or not. oneDNN is switched off: it picks its blocking from the
    CPU it finds, so its float results could follow the CPU model.
    """
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.backends.mkldnn.enabled = False
    # One matrix product with MKL's verbose mode on prints the branch MKL really runs
    # (`CNR:COMPATIBLE`); the parent refuses the model when it reads anything else.
    with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
        torch.ones(8, 8) @ torch.ones(8, 8)


def train_tokenizer(texts: list[str], out: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.save(str(out / "tokenizer.json"), pretty=True)
    return PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"), **ROLE_TOKENS)


def render(template: str, items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(prompt, reply) texts, the prompt rendered by transformers exactly as vLLM renders it."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocabulary = models.WordLevel({"<bos>": 0}, **{"unk_token": "<bos>"})
    bootstrap = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(vocabulary), **{"bos_token": "<bos>"}
    )
    bootstrap.chat_template = template
    pairs = []
    for item in items:
        prompt = bootstrap.apply_chat_template(
            item["messages"],
            tools=item["tools"] or None,
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=item["thinking"],
        )
        pairs.append((prompt, item["reply"]))
    return pairs


def write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def model_config(ids: dict[str, int], vocab: int) -> dict[str, Any]:
    return {
        **TEXT_CONFIG,
        "architectures": ["Gemma4ForCausalLM"],
        "vocab_size": vocab,
        "pad_token_id": ids["<pad>"],
        "bos_token_id": ids["<bos>"],
        "eos_token_id": [ids[token] for token in STOP_TOKENS],
        "torch_dtype": "float32",
    }


def assistant_config(ids: dict[str, int], vocab: int) -> dict[str, Any]:
    text = {
        **TEXT_CONFIG,
        "num_hidden_layers": len(ASSISTANT_LAYERS),
        "layer_types": ASSISTANT_LAYERS,
        "num_kv_shared_layers": len(ASSISTANT_LAYERS),
        "enable_moe_block": False,
        "num_experts": None,
        "top_k_experts": None,
        "moe_intermediate_size": None,
        "vocab_size": vocab,
        "pad_token_id": ids["<pad>"],
        "bos_token_id": ids["<bos>"],
        "eos_token_id": [ids[token] for token in STOP_TOKENS],
    }
    return {
        "architectures": ["Gemma4AssistantForCausalLM"],
        "model_type": "gemma4_assistant",
        "text_config": text,
        "backbone_hidden_size": TEXT_CONFIG["hidden_size"],
        "use_ordered_embeddings": False,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def tokenizer_files(out: Path, template: str, ids: dict[str, int]) -> None:
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
    write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "added_tokens_decoder": added,
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "add_bos_token": False,
            "add_eos_token": False,
            "model_max_length": MAX_POSITIONS,
            "clean_up_tokenization_spaces": False,
        },
    )
    write_json(
        out / "special_tokens_map.json",
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
    )
    (out / "chat_template.jinja").write_text(template, encoding="utf-8")
    write_json(
        out / "generation_config.json",
        {
            "bos_token_id": ids["<bos>"],
            "eos_token_id": [ids[token] for token in STOP_TOKENS],
            "pad_token_id": ids["<pad>"],
        },
    )


def examples(tokenizer: Any, pairs: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """Token ids of prompt + reply and where the reply starts (the loss covers the reply only)."""
    encoded = []
    for prompt, reply in pairs:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        reply_ids = tokenizer.encode(reply, add_special_tokens=False)
        encoded.append((prompt_ids + reply_ids, len(prompt_ids)))
    return encoded


def train(model: Any, data: list[tuple[list[int], int]], steps: int, seed: int, pad: int) -> float:
    import torch

    generator = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    # Batches of similar lengths: padding would cost as much as the examples themselves.
    ordered = sorted(data, key=lambda example: len(example[0]))
    batches = [ordered[i : i + BATCH_SIZE] for i in range(0, len(ordered), BATCH_SIZE)]
    loss_value = math.inf
    model.train()
    for step in range(steps):
        warm = min(1.0, (step + 1) / WARMUP_STEPS)
        rate = warm * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = LEARNING_RATE * max(rate, 0.02)
        batch = generator.choice(batches)
        batch_size = len(batch)
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((batch_size, width), pad, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for row, (ids, start) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, start : len(ids)] = torch.tensor(ids[start:])
            mask[row, : len(ids)] = 1
        # Logits only from the first reply on: the prompts (tool declarations) are most of each
        # example, and the vocabulary projection is most of the cost.
        first = min(start for _, start in batch)
        keep = torch.arange(first - 1, width - 1)
        logits = model(input_ids=input_ids, attention_mask=mask, logits_to_keep=keep).logits
        targets = labels[:, first:width]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = float(loss.detach())
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step} loss {loss_value:.4f}", flush=True)
    model.eval()
    return loss_value


def save_weights(model: Any, path: Path) -> None:
    """safetensors with sorted names, float32, tied lm_head left out (as save_pretrained does)."""
    from safetensors.torch import save_file

    state = {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in model.state_dict().items()
        if name != "lm_head.weight"
    }
    save_file(dict(sorted(state.items())), str(path), metadata={"format": "pt"})


def main(request_path: str) -> None:
    import torch
    from transformers import (
        Gemma4AssistantConfig,
        Gemma4AssistantForCausalLM,
        Gemma4ForCausalLM,
        Gemma4TextConfig,
    )

    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    out, seed, steps = Path(request["out"]), int(request["seed"]), int(request["steps"])
    template = Path(request["chat_template"]).read_text(encoding="utf-8")
    corpus = [
        line.strip()
        for line in Path(request["corpus"]).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    reproducible_torch(torch)
    torch.manual_seed(seed)
    items = conversations(random.Random(seed))
    pairs = render(template, items)
    main_dir, draft_dir = out / "model", out / "assistant"
    for directory in (main_dir, draft_dir):
        directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(corpus + [p + r for p, r in pairs], main_dir)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    vocab = len(tokenizer)

    config = model_config(ids, vocab)
    model = Gemma4ForCausalLM(Gemma4TextConfig(**config)).to(torch.float32)
    loss = train(model, examples(tokenizer, pairs), steps, seed, ids["<pad>"])
    write_json(main_dir / "config.json", config)
    tokenizer_files(main_dir, template, ids)
    save_weights(model, main_dir / "model.safetensors")

    draft_config = assistant_config(ids, vocab)
    torch.manual_seed(seed + 1)
    draft = Gemma4AssistantForCausalLM(Gemma4AssistantConfig(**draft_config)).to(torch.float32)
    write_json(draft_dir / "config.json", draft_config)
    save_weights(draft, draft_dir / "model.safetensors")
    write_json(
        out / "training.json",
        {"examples": len(pairs), "steps": steps, "seed": seed, "final_loss": round(loss, 4),
         "torch": torch.__version__, "threads": torch.get_num_threads()},
    )  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(sys.argv[1])
