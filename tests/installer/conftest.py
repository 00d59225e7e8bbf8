"""Fixtures shared by the installer tests."""

from pathlib import Path

import pytest

from installer import signing


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle-signing key pair (bundle.key, bundle.pub) for the module's test bundles."""
    directory = tmp_path_factory.mktemp("keys")
    signing.generate_keypair(directory)
    return directory
