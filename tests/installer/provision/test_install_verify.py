"""Install-time verification against the appliance trust dir: model signatures, revocation,
key rotation. No playbook runs here (fast): everything happens before anything is written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.appliance.layout import Layout
from controlplane.core import signing
from installer.bundle.signature import make_endorsement
from installer.bundle.trust import TrustStore
from installer.provision.apply import InstallError
from installer.provision.install import remember_rotated_signer, verify_report
from tests.installer.fixtures.bundles import make_bundle

MODELSIG = Path(__file__).parents[1] / "bundle" / "data" / "modelsig"
SPARKPLANE = str(Path(sys.executable).parent / "sparkplane")


@pytest.fixture(scope="module")
def signed_model_bundle(keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose model carries an OpenSSF model-signing signature (made with the real tool)."""
    return make_bundle(
        tmp_path_factory.mktemp("b") / "bundle",
        keys / "bundle.key",
        model_source=MODELSIG / "key-model",
        model_extra={"model_signature": "model.sig"},
    )


def trusted_root(tmp_path: Path, keys: Path, model_key: bool) -> Path:
    root = tmp_path / "root"
    store = TrustStore(Layout.at(root).trust)
    store.add(signing.load_public_key(keys / "bundle.pub"))
    if model_key:
        (store.trust_dir / "model-signing").mkdir()
        shutil.copy(MODELSIG / "signer-ec.pub", store.trust_dir / "model-signing" / "signer.pem")
    return root


def test_model_signature_is_checked_with_the_trust_dirs_model_keys(
    signed_model_bundle, keys, tmp_path
) -> None:
    key = signing.load_public_key(keys / "bundle.pub")
    root = trusted_root(tmp_path, keys, model_key=True)
    report = verify_report(signed_model_bundle, [key], root)
    [(component, status, detail)] = report.model_signatures
    assert (component, status) == ("tiny", "verified") and detail.startswith("key ")
    unchecked = verify_report(signed_model_bundle, [key], trusted_root(tmp_path / "2", keys, False))
    assert [s for _, s, _ in unchecked.model_signatures] == ["unchecked"]


def test_install_output_shows_the_model_signature(signed_model_bundle, keys, tmp_path) -> None:
    root = trusted_root(tmp_path, keys, model_key=True)
    done = subprocess.run(
        [SPARKPLANE, "install", str(signed_model_bundle), "--root", str(root), "--yes"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "model signature of tiny: verified (key " in done.stdout, done.stdout + done.stderr
    # This signed test model has no attention shape to plan with: refused before any write.
    assert done.returncode == 1 and not Layout.at(root).opt.exists()


def test_a_revoked_signer_is_refused_even_when_passed_explicitly(keys, tmp_path) -> None:
    bundle = make_bundle(tmp_path / "bundle", keys / "bundle.key")
    key = signing.load_public_key(keys / "bundle.pub")
    root = tmp_path / "root"
    TrustStore(Layout.at(root).trust).revoke(signing.fingerprint(key))
    with pytest.raises(InstallError) as caught:
        verify_report(bundle, [key], root)
    assert any("revoked-signer" in line for line in caught.value.details), caught.value.details


def test_a_rotated_key_endorsed_by_a_trusted_one_is_remembered(keys, tmp_path) -> None:
    new_keys = tmp_path / "new-keys"
    signing.generate_keypair(new_keys)
    bundle = make_bundle(tmp_path / "bundle", new_keys / "bundle.key")
    old_private = signing.load_private_key(keys / "bundle.key")
    new_public = signing.load_public_key(new_keys / "bundle.pub")
    (bundle / "signer.endorsement").write_bytes(make_endorsement(old_private, new_public))
    root = trusted_root(tmp_path, keys, model_key=False)
    store = TrustStore(Layout.at(root).trust)
    assert not store.is_trusted(new_public)
    report = verify_report(bundle, store.keys(), root)
    assert report.endorsed_by == signing.fingerprint(old_private.public_key())
    remember_rotated_signer(report, root)
    assert store.is_trusted(new_public)
