"""Every profile's engine arguments, judged by the real vLLM's own argument parser.

The demo's arguments are those the installer rendered (Ansible) into the installed root; the Spark
profiles' are make_plan's for a Gemma 4 26B-A4B NVFP4 config (its real shape) rendered through the
same templates, for the wheelhouse runtime (engine.args) and the container runtime (the unit's
command after the image). vLLM parses and validates each one as its API server would, so a renamed
or invalid flag, an unknown parser or a malformed speculative config fails here. The parser comes
from the engine venv the session installed (vLLM 0.32, the demo's; the Spark's pin is the same
minor version, see test_pins.py). The NVFP4 model cannot be loaded on this CPU: its engine config
is parsed and validated, not built (see the flag table in docs/installer.md).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from controlplane.appliance.layout import Layout, engine_command
from installer.host.kvcache import GIB
from installer.host.plan import make_plan
from tests.e2e.conftest import REPO, Installed
from tests.installer.fixtures.bundles import gemma4_like_config
from tests.installer.fixtures.templates import exec_start, render

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENGINE_MODULE = ["-m", "vllm.entrypoints.openai.api_server"]


def spark_model(directory: Path, config: dict[str, object], weights: int) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    quant = {"quantization": {"quant_algo": "NVFP4"}}
    (directory / "hf_quant_config.json").write_text(json.dumps(quant))
    with (directory / "model.safetensors").open("wb") as handle:
        handle.truncate(weights)  # sparse: the plan reads the size only
    return directory


def rendered_args(model: Path, draft: Path, profile: str, runtime: str) -> list[str]:
    """make_plan's flags rendered by the templates, as the engine would receive them."""
    plan = make_plan(model, profile, 128 * GIB, draft)
    variables = {
        "sparkplane_engine_runtime": runtime,
        "sparkplane_engine_profile": profile,
        "sparkplane_engine_profile_args": plan.args,
        "sparkplane_engine_profile_env": plan.env,
        "sparkplane_engine_speculative_tokens": plan.speculative_tokens,
        "sparkplane_model_dir": str(model),
        "sparkplane_draft_model_dir": str(draft),
        "sparkplane_container_image": "vllm/vllm-openai:test",
    }
    if runtime == "wheelhouse":
        lines = render("engine.args.j2", **variables).splitlines()
        return [line for line in lines if not line.startswith("#")]
    argv = exec_start(render("sparkplane-engine.service.j2", **variables))
    return argv[argv.index("vllm/vllm-openai:test") + 1 + len(ENGINE_MODULE) :]


@pytest.fixture(scope="module")
def verdicts(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("engine-args")
    model = spark_model(tmp / "gemma-4-26b-a4b-nvfp4", gemma4_like_config(), 16 * GIB)
    draft = spark_model(tmp / "gemma-4-26b-a4b-assistant", {"model_type": "gemma4_assistant"}, GIB)
    layout = Layout.at(installed.root)
    demo_argv, _ = engine_command(layout)
    cases = [{"name": "demo", "argv": demo_argv[3:], "build_config": True}]
    for profile in ("throughput", "latency"):
        for runtime in ("wheelhouse", "container"):
            argv = rendered_args(model, draft, profile, runtime)
            cases.append({"name": f"{profile}-{runtime}", "argv": argv, "build_config": False})
    # Controls: the judge must be able to say no.
    latency = rendered_args(model, draft, "latency", "wheelhouse")
    renamed = [arg.replace("--reasoning-parser", "--reasoning-parsr") for arg in latency]
    spec_at = latency.index("--speculative-config") + 1
    malformed = [*latency]
    malformed[spec_at] = malformed[spec_at].replace("num_speculative_tokens", "num_spec_tokens")
    no_media_limit = latency[: latency.index("--allowed-media-domains")]
    cases += [
        {"name": "control-renamed-flag", "argv": renamed, "build_config": False},
        {"name": "control-malformed-speculative", "argv": malformed, "build_config": False},
        {"name": "control-no-media-limit", "argv": no_media_limit, "build_config": False},
    ]
    (tmp / "cases.json").write_text(json.dumps(cases))
    python = layout.current / "engine-venv" / "bin" / "python"
    done = subprocess.run(
        [str(python), str(REPO / "tests" / "e2e" / "vllm_args_check.py"),
         str(tmp / "cases.json"), str(tmp / "verdicts.json")],
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
             "VLLM_NO_USAGE_STATS": "1", "HOME": str(tmp)},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp / "verdicts.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "case",
    ["demo", "throughput-wheelhouse", "throughput-container", "latency-wheelhouse",
     "latency-container"],
)  # fmt: skip
def test_vllm_accepts_every_profiles_engine_arguments(verdicts: dict, case: str) -> None:
    verdict = verdicts[case]
    assert verdict["ok"], verdict["error"]
    # The engine fetches no remote media: vLLM's own connector, configured as parsed, refuses.
    assert verdict["media_domains"] == ["no-remote-media/"]
    assert verdict["media"].startswith("refused: The URL must be from one of the allowed domains")


def test_the_demo_and_the_latency_profile_speculate_with_the_installed_draft(
    verdicts: dict, installed: Installed
) -> None:
    models = Layout.at(installed.root).models
    assert verdicts["demo"]["speculative"] == {
        "model": str(models / "sparkplane-demo-assistant"),
        "num_speculative_tokens": 3,
    }
    assert verdicts["latency-container"]["speculative"]["num_speculative_tokens"] == 3
    assert verdicts["throughput-wheelhouse"]["speculative"] is None


def test_the_judge_refuses_a_renamed_flag_and_a_malformed_speculative_config(
    verdicts: dict,
) -> None:
    assert "unrecognized arguments: --reasoning-parsr" in verdicts["control-renamed-flag"]["error"]
    assert "num_spec_tokens" in verdicts["control-malformed-speculative"]["error"]
    # Without --allowed-media-domains vLLM would try to fetch (it gets as far as reading it).
    assert verdicts["control-no-media-limit"]["media"].startswith("attempted")
