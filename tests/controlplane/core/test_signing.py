import stat

import pytest

from controlplane.core import signing


def test_keypair_files_modes_and_round_trip(tmp_path):
    key_path, pub_path = signing.generate_keypair(tmp_path / "keys")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    private, public = signing.load_private_key(key_path), signing.load_public_key(pub_path)
    signature = signing.sign(private, b"manifest bytes")
    assert len(signature) == 64
    assert signing.verify(public, b"manifest bytes", signature)
    assert not signing.verify(public, b"manifest bytes!", signature)
    assert not signing.verify(public, b"manifest bytes", bytes(64))


def test_fingerprint_is_ssh_style_and_distinguishes_keys(tmp_path):
    _, pub1 = signing.generate_keypair(tmp_path / "a")
    _, pub2 = signing.generate_keypair(tmp_path / "b")
    fp1 = signing.fingerprint(signing.load_public_key(pub1))
    assert fp1.startswith("SHA256:") and len(fp1) == 7 + 43 and "=" not in fp1
    assert fp1 == signing.fingerprint(signing.load_public_key(pub1))
    assert fp1 != signing.fingerprint(signing.load_public_key(pub2))


def test_refuses_to_overwrite_existing_keys(tmp_path):
    signing.generate_keypair(tmp_path)
    with pytest.raises(signing.SigningKeyError, match="already exists"):
        signing.generate_keypair(tmp_path)


def test_clear_errors_for_bad_key_files(tmp_path):
    with pytest.raises(signing.SigningKeyError, match="not found"):
        signing.load_public_key(tmp_path / "nope.pub")
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    with pytest.raises(signing.SigningKeyError, match="not a PEM public key"):
        signing.load_public_key(junk)
    _key_path, pub_path = signing.generate_keypair(tmp_path / "k")
    with pytest.raises(signing.SigningKeyError, match="not a PEM private key"):
        signing.load_private_key(pub_path)
