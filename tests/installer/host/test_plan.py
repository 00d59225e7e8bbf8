"""KV-cache budget and engine flags per profile, from real config.json files on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.core import signing
from installer.host.kvcache import GIB, ModelConfigError, attention_shape
from installer.host.plan import PlanError, make_plan
from installer.provision.install import InstallError, install
from tests.installer.fixtures.bundles import gemma4_like_config, make_bundle, tiny_model_config

KIB = 1024


def write_model(directory: Path, config: dict[str, object], weights: int = 0, nvfp4=False) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    if weights:
        with (directory / "model-00001-of-00001.safetensors").open("wb") as handle:
            handle.truncate(weights)  # sparse: the size is what the budget reads
    if nvfp4:
        quant = {"quantization": {"quant_algo": "NVFP4"}}
        (directory / "hf_quant_config.json").write_text(json.dumps(quant))
    return directory


@pytest.fixture
def gemma(tmp_path: Path) -> Path:
    return write_model(tmp_path / "gemma", gemma4_like_config(), weights=16 * GIB, nvfp4=True)


def test_gemma4_kv_per_token_matches_the_design_figures(gemma: Path) -> None:
    shape = attention_shape(gemma)
    assert (shape.sliding_layers, shape.full_layers) == (25, 5)
    assert shape.bytes_per_token("bf16") == (200 * KIB, 20 * KIB)
    assert shape.bytes_per_token("fp8") == (100 * KIB, 10 * KIB)
    # Sliding layers stop growing at the window; full layers grow with the context.
    at_window = shape.bytes_per_sequence(1024, "fp8")
    assert shape.bytes_per_sequence(2048, "fp8") - at_window == 1024 * 10 * KIB


def test_throughput_on_a_spark_gets_32_sequences_at_full_context(gemma: Path) -> None:
    plan = make_plan(gemma, "throughput", 128 * GIB)
    assert (plan.max_num_seqs, plan.max_model_len) == (32, 262144)
    args = plan.args
    assert args[args.index("--kv-cache-dtype") + 1] == "fp8"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.85"
    assert args[args.index("--tool-call-parser") + 1] == "gemma4"
    assert args[args.index("--reasoning-parser") + 1] == "gemma4"
    assert "--enable-auto-tool-choice" in args
    assert args[args.index("--moe-backend") + 1] == "marlin"
    assert plan.env == {"VLLM_NVFP4_GEMM_BACKEND": "marlin"}
    # The engine serves what waits in it by the control plane's fair tags: 8 of them here.
    assert args[args.index("--scheduling-policy") + 1] == "priority"
    assert plan.engine_queue == 8


def test_throughput_shortens_the_context_on_a_smaller_box(gemma: Path) -> None:
    plan = make_plan(gemma, "throughput", 48 * GIB)
    assert (plan.max_num_seqs, plan.max_model_len) == (32, 32768)
    fits = {row.context: row.sequences_that_fit for row in plan.table}
    assert fits[32768] >= 32 > fits[65536]


def test_a_profile_that_cannot_fit_is_refused_with_the_numbers(gemma: Path) -> None:
    with pytest.raises(PlanError, match=r"throughput profile does not fit: 32 sequences"):
        make_plan(gemma, "throughput", 24 * GIB)


def test_latency_uses_the_draft_model_for_speculative_decoding(gemma: Path, tmp_path) -> None:
    draft = write_model(tmp_path / "draft", gemma4_like_config(), weights=GIB)
    plan = make_plan(gemma, "latency", 128 * GIB, draft)
    args = plan.args
    assert args[args.index("--max-model-len") + 1] == "32768"
    assert args[args.index("--max-num-seqs") + 1] == "8"
    # The flag is rendered from the draft's installed directory (templates/_engine.j2).
    assert plan.speculative_tokens == 3 and "--speculative-config" not in args
    assert plan.weights_bytes == 17 * GIB  # the draft's weights share the memory
    assert make_plan(gemma, "latency", 128 * GIB).speculative_tokens == 0
    assert make_plan(gemma, "throughput", 128 * GIB, draft).speculative_tokens == 0


def test_demo_profile_is_the_cpu_engine_of_the_vllm_note(tmp_path: Path) -> None:
    plan = make_plan(write_model(tmp_path / "tiny", tiny_model_config()), "demo", 0)
    assert plan.args == [
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "8",
        "--dtype",
        "float32",
        "--enforce-eager",
        "--scheduling-policy",
        "priority",
    ]
    assert plan.env == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    assert plan.speculative_tokens == 0
    assert plan.engine_queue == 2  # a quarter of the batch, at least 2


def test_demo_profile_of_a_gemma4_model_takes_the_spark_parsers_and_mtp(tmp_path: Path) -> None:
    config = gemma4_like_config()
    config["text_config"]["max_position_embeddings"] = 1024  # type: ignore[index]
    config["text_config"]["num_hidden_layers"] = 6  # type: ignore[index]
    config["text_config"]["layer_types"] = ["sliding_attention"] * 5 + ["full_attention"]  # type: ignore[index]
    model = write_model(tmp_path / "tiny-gemma", config, weights=1000)
    draft = write_model(tmp_path / "tiny-draft", {"model_type": "gemma4_assistant"}, weights=10)
    plan = make_plan(model, "demo", 0, draft)
    assert plan.args[plan.args.index("--max-model-len") :] == [
        "--max-model-len", "512", "--max-num-seqs", "8", "--dtype", "float32", "--enforce-eager",
        "--scheduling-policy", "priority",
        "--enable-auto-tool-choice", "--tool-call-parser", "gemma4", "--reasoning-parser", "gemma4",
    ]  # fmt: skip
    assert plan.speculative_tokens == 3 and plan.weights_bytes == 1010


def test_bad_configs_get_specific_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match=r"no config\.json"):
        attention_shape(tmp_path)
    config = gemma4_like_config()
    config["text_config"]["layer_types"] = ["full_attention"]  # type: ignore[index]
    with pytest.raises(ModelConfigError, match="layer_types lists 1 layers"):
        attention_shape(write_model(tmp_path / "bad", config))
    with pytest.raises(PlanError, match="unknown profile"):
        make_plan(tmp_path / "bad", "turbo", GIB)


def test_install_refuses_a_profile_that_cannot_fit(tmp_path: Path) -> None:
    signing.generate_keypair(tmp_path / "k")
    bundle = make_bundle(tmp_path / "bundle", tmp_path / "k/bundle.key")
    key = signing.load_public_key(tmp_path / "k/bundle.pub")
    with pytest.raises(InstallError) as caught:
        install(bundle, tmp_path / "root", [key], "throughput", memory_bytes=GIB)
    assert "does not fit" in caught.value.details[0]
    assert not (tmp_path / "root").exists()


def test_plan_cli_prints_the_fit_table(tmp_path: Path) -> None:
    signing.generate_keypair(tmp_path / "k")
    bundle = make_bundle(
        tmp_path / "bundle", tmp_path / "k/bundle.key", model_config=gemma4_like_config()
    )
    sparkplane = str(Path(sys.executable).parent / "sparkplane")
    done = subprocess.run(
        [
            sparkplane,
            "plan",
            "--bundle",
            str(bundle),
            "--profile",
            "throughput",
            "--memory-gib",
            "128",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "25 sliding layers" in done.stdout and "100 KiB sliding + 10 KiB full" in done.stdout
    assert "262144" in done.stdout and "--max-num-seqs 32" in done.stdout
    refused = subprocess.run(
        [
            sparkplane,
            "plan",
            "--bundle",
            str(bundle),
            "--profile",
            "throughput",
            "--memory-gib",
            "8",
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "does not fit" in refused.stdout
