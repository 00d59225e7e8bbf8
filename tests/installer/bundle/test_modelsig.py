"""OpenSSF model-signing signatures made by the real `model_signing` tool (v1.1.1), checked offline.

The fixtures in data/modelsig were produced with `model_signing sign key` (EC P-256 key) and
`model_signing sign certificate` (a leaf certificate issued by a test CA).
"""

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from controlplane.core import signing
from installer.bundle.build import BuildError, build_bundle
from installer.bundle.modelsig import ModelSignatureError, ModelTrust, verify_model_signature
from installer.bundle.verify import verify_bundle
from tests.installer.fixtures.cli import run

DATA = Path(__file__).parent / "data" / "modelsig"
KEY = DATA / "signer-ec.pub"
CA = DATA / "model-ca.pem"


def _digests(model: Path) -> dict[str, str]:
    return {
        p.relative_to(model).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in model.rglob("*")
        if p.is_file()
    }


def test_key_and_certificate_mode_signatures_verify():
    key_model, cert_model = DATA / "key-model", DATA / "cert-model"
    signer = verify_model_signature(
        (key_model / "model.sig").read_bytes(), _digests(key_model), ModelTrust.from_paths([KEY])
    )
    assert signer.startswith("key ")
    signer = verify_model_signature(
        (cert_model / "model.sig").read_bytes(), _digests(cert_model), ModelTrust.from_paths([CA])
    )
    assert "Sparkplane Test Model Publisher" in signer and "Sparkplane Test Model CA" in signer


def test_wrong_trust_or_changed_files_fail():
    key_model = DATA / "key-model"
    signature = (key_model / "model.sig").read_bytes()
    with pytest.raises(ModelSignatureError, match="trusted model-signing key"):
        verify_model_signature(signature, _digests(key_model), ModelTrust.from_paths([CA]))
    with pytest.raises(ModelSignatureError, match="trusted model-signing CA"):
        cert_model = DATA / "cert-model"
        verify_model_signature(
            (cert_model / "model.sig").read_bytes(),
            _digests(cert_model),
            ModelTrust.from_paths([KEY]),
        )
    trust = ModelTrust.from_paths([KEY])
    changed = _digests(key_model) | {"config.json": "0" * 64}
    with pytest.raises(ModelSignatureError, match=r"config\.json: digest differs"):
        verify_model_signature(signature, changed, trust)
    extra = _digests(key_model) | {"added.bin": "1" * 64}
    with pytest.raises(ModelSignatureError, match=r"added\.bin: not covered"):
        verify_model_signature(signature, extra, trust)
    missing = {k: v for k, v in _digests(key_model).items() if k != "sub/extra.json"}
    with pytest.raises(ModelSignatureError, match=r"sub/extra\.json: not in the bundle"):
        verify_model_signature(signature, missing, trust)
    bundle = json.loads(signature)
    raw = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    raw[-1] ^= 1
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(ModelSignatureError, match="trusted model-signing key"):
        verify_model_signature(json.dumps(bundle).encode(), _digests(key_model), trust)


def _spec(tmp_path: Path, model_dir: Path, trust_line: str = "") -> Path:
    spec = tmp_path / "signed.yaml"
    spec.write_text(
        "schema: 1\nname: signed\nversion: '1'\nplatform: {arch: x86_64, accelerator: cpu}\n"
        "components:\n"
        f"  - name: signed-model\n    role: model\n    source: {model_dir}\n{trust_line}"
    )
    return spec


def test_bundle_build_and_verify_with_model_signature(tmp_path, keypair):
    model = Path(shutil.copytree(DATA / "key-model", tmp_path / "model"))
    spec = _spec(tmp_path, model, f"    signing_trust: [{KEY}]\n")
    bundle = build_bundle(spec, keypair[0], tmp_path / "bundle").path
    trusted = [signing.load_public_key(keypair[1])]
    report = verify_bundle(bundle, trusted, model_trust=ModelTrust.from_paths([KEY]))
    assert report.ok and report.model_signatures[0][:2] == ("signed-model", "verified")
    unchecked = verify_bundle(bundle, trusted)
    assert unchecked.ok and unchecked.model_signatures[0][1] == "unchecked"
    wrong = verify_bundle(bundle, trusted, model_trust=ModelTrust.from_paths([CA]))
    assert wrong.problems() == {"model-signature"}

    result = run("bundle", "verify", bundle, "--trust", keypair[1], "--model-trust", KEY)
    assert result.returncode == 0 and "signed-model: verified" in result.stdout
    # A trust directory's model-signing/ folder is used too.
    trust_dir = tmp_path / "trust"
    (trust_dir / "model-signing").mkdir(parents=True)
    shutil.copyfile(keypair[1], trust_dir / "publisher.pub")
    shutil.copyfile(CA, trust_dir / "model-signing" / "ca.pem")
    result = run("bundle", "verify", bundle, "--trust", trust_dir)
    assert result.returncode == 1 and "model-signature" in result.stdout


def test_build_refuses_a_model_that_no_longer_matches_its_signature(tmp_path, keypair):
    model = Path(shutil.copytree(DATA / "key-model", tmp_path / "model"))
    (model / "model.safetensors").write_bytes(b"retrained without re-signing")
    spec = _spec(tmp_path, model, f"    signing_trust: [{KEY}]\n")
    with pytest.raises(BuildError, match=r"model\.safetensors: digest differs"):
        build_bundle(spec, keypair[0], tmp_path / "bundle")
    # Without signing_trust the build records the signature and verify catches the mismatch.
    bundle = build_bundle(_spec(tmp_path, model), keypair[0], tmp_path / "b2").path
    trusted = [signing.load_public_key(keypair[1])]
    report = verify_bundle(bundle, trusted, model_trust=ModelTrust.from_paths([KEY]))
    assert report.problems() == {"model-signature"}


def test_unreadable_trust_material_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(ModelSignatureError, match="not a PEM public key or certificate"):
        ModelTrust.from_paths([junk])
    _, ed25519_pub = signing.generate_keypair(tmp_path / "ed")
    with pytest.raises(ModelSignatureError, match="elliptic-curve"):
        ModelTrust.from_paths([ed25519_pub])
