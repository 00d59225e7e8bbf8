"""The Spark specs build (offline) against fake inputs: every component and flag is checked."""

import json
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from controlplane.core import signing
from installer.bundle.build import BuildError, build_bundle
from installer.bundle.spec import load_spec
from installer.bundle.verify import verify_bundle
from installer.bundle.wheelhouse import COMPLETE_MARKER, requirement_lines, wheelhouse_key
from installer.host.preflight import BundleNeeds
from tests.installer.fixtures.bundles import REPO

SPARK = REPO / "offline-bundle" / "gemma4-26b-a4b-nvfp4-spark.yaml"
SPARK_WHEELS = REPO / "offline-bundle" / "gemma4-26b-a4b-nvfp4-spark-wheels.yaml"


def _fake_model(root: Path, architecture: str) -> Path:
    root.mkdir(parents=True)
    config = {"architectures": [architecture], "model_type": "gemma4", "text_config": {}}
    (root / "config.json").write_text(json.dumps(config))
    (root / "hf_quant_config.json").write_text(
        json.dumps({"quantization": {"quant_algo": "NVFP4"}})
    )
    (root / "tokenizer.json").write_text("{}")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    for shard in (1, 2):
        (root / f"model-0000{shard}-of-00002.safetensors").write_bytes(bytes([shard]) * 4096)
    (root / ".cache").mkdir()  # huggingface-cli download metadata: not part of the bundle
    (root / ".cache" / "junk").write_text("x")
    return root


def _seed(cache: Path, requirements: list[str], tags: list[str], wheels: list[str]) -> None:
    target = cache / "wheels" / wheelhouse_key(requirements, tags, "3.12")
    target.mkdir(parents=True, exist_ok=True)
    for name in wheels:
        (target / name).write_bytes(b"PK fake wheel " + name.encode())
    (target / COMPLETE_MARKER).write_text("{}")


@pytest.fixture
def spark_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKPLANE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # any real download would fail the test
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    image = tmp_path / "vllm.tar"
    manifest = tmp_path / "manifest.json"
    manifest.write_text('[{"Config": "c.json", "RepoTags": ["vllm/vllm-openai:v0.32.0"]}]')
    with tarfile.open(image, "w") as archive:
        archive.add(manifest, arcname="manifest.json")
    (tmp_path / "flashinfer" / "cubins" / "sm121").mkdir(parents=True)
    (tmp_path / "flashinfer" / "cubins" / "sm121" / "fmha.cubin").write_bytes(b"\x7fELF" * 64)
    wheel = tmp_path / "sparkplane-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK fake sparkplane wheel")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = yaml.safe_load(SPARK.read_text())
    tags = next(c for c in spec["components"] if c["role"] == "controlplane")["platform_tags"]
    _seed(tmp_path / "cache", deps, tags, ["typer-0.12.0-py3-none-any.whl"])
    return {
        "MODEL_DIR": str(_fake_model(tmp_path / "gemma", "Gemma4ForConditionalGeneration")),
        "DRAFT_MODEL_DIR": str(_fake_model(tmp_path / "draft", "Gemma4AssistantModel")),
        "ENGINE_IMAGE_ARCHIVE": str(image),
        "FLASHINFER_CACHE_DIR": str(tmp_path / "flashinfer"),
        "SPARKPLANE_WHEEL": str(wheel),
    }


def test_spark_container_spec(tmp_path, keypair, spark_inputs):
    result = build_bundle(SPARK, keypair[0], tmp_path / "bundle", variables=spark_inputs)
    manifest, bundle = result.manifest, result.path
    assert manifest.platform.model_dump(exclude_none=True) == {
        "arch": "aarch64", "accelerator": "cuda", "cuda": "13.0", "sm": "12.1", "python": "3.12",
    }  # fmt: skip
    parts = {c.role: c for c in manifest.components}
    assert set(parts) == {
        "engine", "model", "draft_model", "flashinfer", "controlplane", "playbooks", "templates"
    }  # fmt: skip
    engine = parts["engine"].model_extra
    assert parts["engine"].path == "engine/image.oci.tar"
    assert engine == {
        "runtime": "container",
        "image_ref": "vllm/vllm-openai:v0.32.0",
        "image_format": "docker-archive",
    }
    model = parts["model"]
    assert model.path == "models/gemma-4-26b-a4b-nvfp4"
    assert model.model_extra["served_model_name"] == "gemma-4-26b-a4b"
    assert model.model_extra["quantization"] == "NVFP4"
    assert parts["draft_model"].path == "models/gemma-4-26b-a4b-assistant"
    assert "served_model_name" not in parts["draft_model"].model_extra
    assert parts["flashinfer"].model_extra["cache_dir"] == "flashinfer/cache"
    assert (bundle / "flashinfer/cache/cubins/sm121/fmha.cubin").is_file()
    paths = {f.path for f in manifest.files}
    assert "models/gemma-4-26b-a4b-nvfp4/model-00002-of-00002.safetensors" in paths
    assert "models/gemma-4-26b-a4b-nvfp4/model.safetensors.index.json" in paths
    assert not any("/.cache/" in p for p in paths)
    wheels = {p.name for p in manifest.packages}
    assert wheels == {"typer", "sparkplane"}
    sbom = json.loads((bundle / "sbom.cdx.json").read_text())
    kinds = {c["type"] for c in sbom["components"]}
    assert kinds == {"container", "machine-learning-model", "data", "library"}
    image = next(c for c in sbom["components"] if c["type"] == "container")
    assert image["hashes"][0]["content"] == next(
        f.sha256 for f in manifest.files if f.path == "engine/image.oci.tar"
    )
    assert verify_bundle(bundle, [signing.load_public_key(keypair[1])]).ok
    needs = BundleNeeds.from_manifest(manifest)  # what preflight compares with the host
    assert (needs.arch, needs.cuda, needs.sm, needs.runtime) == (
        "aarch64",
        "13.0",
        "12.1",
        "container",
    )


def test_an_image_archive_without_the_pinned_image_is_refused(tmp_path, keypair, spark_inputs):
    with pytest.raises(
        BuildError,
        match=r"does not hold vllm/vllm-openai:v0.33.0 \(it holds vllm/vllm-openai:v0.32.0\)",
    ):
        build_bundle(
            SPARK, keypair[0], tmp_path / "bundle",
            variables={**spark_inputs, "ENGINE_IMAGE_REF": "vllm/vllm-openai:v0.33.0"},
        )  # fmt: skip
    assert not (tmp_path / "bundle").exists()


def test_spark_wheelhouse_spec(tmp_path, keypair, spark_inputs):
    spec = load_spec(SPARK_WHEELS, spark_inputs)
    engine = next(c for c in spec.components if c.role == "engine")
    flashinfer = next(c for c in spec.components if c.role == "flashinfer")
    assert "manylinux_2_39_aarch64" in engine.platform_tags
    for component, wheels in (
        (engine, ["vllm-0.32.0+cu130-cp38-abi3-manylinux_2_35_aarch64.whl",
                  "torch-2.9.0-cp312-cp312-manylinux_2_28_aarch64.whl"]),
        (flashinfer, ["flashinfer_cubin-0.6.18.post1-py3-none-any.whl"]),
    ):  # fmt: skip
        reqs = requirement_lines(spec.resolve(component.requirements).read_text())
        _seed(tmp_path / "cache", reqs, component.platform_tags, wheels)
    controlplane = next(c for c in spec.components if c.role == "controlplane")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    _seed(tmp_path / "cache", deps, controlplane.platform_tags, ["typer-0.12.0-py3-none-any.whl"])
    result = build_bundle(SPARK_WHEELS, keypair[0], tmp_path / "bundle", variables=spark_inputs)
    parts = {c.role: c for c in result.manifest.components}
    assert parts["engine"].path == "engine/wheelhouse"
    assert parts["engine"].model_extra["requirements"] == ["vllm==0.32.0+cu130"]
    assert parts["flashinfer"].model_extra["wheelhouse"] == "flashinfer/wheelhouse"
    versions = {(p.name, p.version) for p in result.manifest.packages}
    assert {("vllm", "0.32.0+cu130"), ("flashinfer-cubin", "0.6.18.post1")} <= versions
    assert verify_bundle(result.path, [signing.load_public_key(keypair[1])]).ok
