import pytest

from controlplane.core import signing
from installer.bundle.build import build_bundle
from installer.bundle.signature import make_endorsement
from installer.bundle.trust import TrustError, TrustStore, resolve_trust
from installer.bundle.verify import verify_bundle
from tests.installer.fixtures.bundles import write_tiny_sources


def _keys(tmp_path, name):
    key_path, pub_path = signing.generate_keypair(tmp_path / name)
    return key_path, signing.load_private_key(key_path), signing.load_public_key(pub_path)


def test_first_install_confirms_then_stores(tmp_path, keypair):
    trust_dir = tmp_path / "etc/sparkplane/trust"
    asked = []
    with pytest.raises(TrustError, match="give one with --trust"):
        resolve_trust(trust_dir, None, False, asked.append)
    with pytest.raises(TrustError, match="not confirmed"):
        resolve_trust(trust_dir, keypair[1], False, lambda q: asked.append(q) or False)
    fingerprint = signing.fingerprint(signing.load_public_key(keypair[1]))
    assert fingerprint in asked[0]
    assert TrustStore(trust_dir).keys() == []
    keys = resolve_trust(trust_dir, keypair[1], False, lambda q: True)
    assert [signing.fingerprint(k) for k in keys] == [fingerprint]
    # Later installs need no --trust and ask nothing; --yes never asks.
    assert len(resolve_trust(trust_dir, None, False, lambda q: pytest.fail("asked"))) == 1
    notes = []
    other = tmp_path / "other"
    signing.generate_keypair(other)
    keys = resolve_trust(trust_dir, other / "bundle.pub", True, lambda q: False, notes.append)
    assert len(keys) == 2 and "--yes" in notes[0]


def test_revocation_refuses_a_validly_signing_key(tmp_path, keypair, tiny_bundle):
    store = TrustStore(tmp_path / "trust")
    public = signing.load_public_key(keypair[1])
    store.add(public)
    assert verify_bundle(tiny_bundle, store.keys(), revoked=store.revoked_fingerprints()).ok
    store.revoke(signing.fingerprint(public))
    assert store.keys() == []
    report = verify_bundle(tiny_bundle, store.all_keys(), revoked=store.revoked_fingerprints())
    assert report.problems() == {"revoked-signer"}
    with pytest.raises(TrustError, match="revoked"):
        store.add(public)
    with pytest.raises(TrustError, match="revoked"):
        resolve_trust(store.trust_dir, keypair[1], True, lambda q: True)
    with pytest.raises(TrustError, match="fingerprint"):
        store.revoke("not-a-fingerprint")


def test_rotation_by_endorsement(tmp_path):
    _old_path, old_key, old_pub = _keys(tmp_path, "old")
    new_path, _new_key, new_pub = _keys(tmp_path, "new")
    rogue_path, rogue_key, rogue_pub = _keys(tmp_path, "rogue")
    store = TrustStore(tmp_path / "trust")
    store.add(old_pub)
    spec = write_tiny_sources(tmp_path / "src")
    endorsed = tmp_path / "endorsement"
    endorsed.write_bytes(make_endorsement(old_key, new_pub))
    bundle = build_bundle(spec, new_path, tmp_path / "b-new", endorsement=endorsed).path
    report = verify_bundle(bundle, store.keys())
    assert report.ok and report.endorsed_by == signing.fingerprint(old_pub)
    # The appliance can now record the new key; the old one stays trusted until revoked.
    assert store.accept_rotation(new_pub, endorsed.read_bytes()) == signing.fingerprint(old_pub)
    assert store.is_trusted(new_pub)
    # An endorsement by an untrusted key, or by a revoked one, is worth nothing.
    self_made = tmp_path / "self"
    self_made.write_bytes(make_endorsement(rogue_key, rogue_pub))
    rogue = build_bundle(spec, rogue_path, tmp_path / "b-rogue", endorsement=self_made).path
    assert verify_bundle(rogue, store.keys()).problems() == {"unknown-signer"}
    with pytest.raises(TrustError, match="no valid endorsement"):
        store.accept_rotation(rogue_pub, self_made.read_bytes())
    fresh = TrustStore(tmp_path / "trust2")
    fresh.add(old_pub)
    fresh.revoke(signing.fingerprint(old_pub))
    report = verify_bundle(bundle, fresh.all_keys(), revoked=fresh.revoked_fingerprints())
    assert report.problems() == {"unknown-signer"}


def test_unreadable_key_in_trust_dir_is_an_error(tmp_path):
    (tmp_path / "bad.pub").write_text("garbage")
    with pytest.raises(TrustError, match=r"bad\.pub"):
        TrustStore(tmp_path).keys()


def test_verify_with_trust_dir_records_rotation_only_when_asked(tmp_path):
    from installer.bundle.appliance import verify_with_trust_dir

    _old_path, old_key, old_pub = _keys(tmp_path, "old")
    new_path, _new_key, new_pub = _keys(tmp_path, "new")
    trust_dir = tmp_path / "root/etc/sparkplane/trust"
    TrustStore(trust_dir).add(old_pub)
    endorsement = tmp_path / "endorsement"
    endorsement.write_bytes(make_endorsement(old_key, new_pub))
    spec = write_tiny_sources(tmp_path / "src")
    bundle = build_bundle(spec, new_path, tmp_path / "b", endorsement=endorsement).path
    assert verify_with_trust_dir(bundle, trust_dir).ok
    assert not TrustStore(trust_dir).is_trusted(new_pub)
    assert verify_with_trust_dir(bundle, trust_dir, record_rotation=True).ok
    assert TrustStore(trust_dir).is_trusted(new_pub)
