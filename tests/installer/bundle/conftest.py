"""Fixtures that build real (tiny) signed bundles: a generated model, a `files` tree, playbooks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from installer import signing
from installer.bundle.build import build_bundle

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO / "offline-bundle" / "demo-corpus.txt"

TINY_SPEC = """\
schema: 1
name: tiny
version: "1.0"
platform: {arch: x86_64, accelerator: cpu, python: "3.11"}
components:
  - {name: tiny-model, role: model, generate: demo, corpus: CORPUS, served_model_name: tiny}
  - {name: site-files, role: files, source: site, dest: extras/site}
  - {name: playbooks, role: playbooks, source: playbooks}
"""


def write_tiny_sources(root: Path) -> Path:
    """A spec plus its source trees under `root`; returns the spec path."""
    site = root / "site"
    (site / "nested" / "deeper").mkdir(parents=True)
    (site / "README.txt").write_text("site notes\n")
    (site / "nested" / "a.bin").write_bytes(bytes(range(256)) * 4)
    (site / "nested" / "deeper" / "b.txt").write_text("b" * 1000)
    (site / "empty.txt").write_bytes(b"")
    (root / "playbooks").mkdir()
    (root / "playbooks" / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_SPEC.replace("CORPUS", str(CORPUS)))
    return spec


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return signing.generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def built_tiny(tmp_path_factory: pytest.TempPathFactory, keypair: tuple[Path, Path]) -> Path:
    root = tmp_path_factory.mktemp("tiny-src")
    spec = write_tiny_sources(root)
    return build_bundle(spec, keypair[0], root / "bundle").path


@pytest.fixture
def tiny_bundle(built_tiny: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny bundle that a test may tamper with."""
    return Path(shutil.copytree(built_tiny, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def trusted(keypair: tuple[Path, Path]) -> list:
    return [signing.load_public_key(keypair[1])]
