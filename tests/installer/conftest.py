"""Fixtures shared by the installer tests: signing keys and a real tiny signed bundle."""

import shutil
from pathlib import Path

import pytest

from controlplane.core import signing
from installer.bundle.build import build_bundle
from tests.installer.fixtures.bundles import write_tiny_sources


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle-signing key pair (bundle.key, bundle.pub) for the module's test bundles."""
    directory = tmp_path_factory.mktemp("keys")
    signing.generate_keypair(directory)
    return directory


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
