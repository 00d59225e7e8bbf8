"""Manifest signature and signer trust, including key rotation by endorsement.

A publisher rotates keys by having the old (trusted) key sign the new public key: that
endorsement travels in the bundle as `signer.endorsement`, so an appliance that trusts only the
old key accepts bundles signed by the new one (and may then store the new key).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controlplane.core import signing
from installer.bundle.manifest import ENDORSEMENT_NAME, SIGNATURE_NAME, SIGNER_NAME
from installer.bundle.report import VerifyReport

_ENDORSEMENT_CONTEXT = b"sparkplane-key-endorsement-v1\n"


def make_endorsement(endorser: Ed25519PrivateKey, new_key: Ed25519PublicKey) -> bytes:
    """A one-line JSON record: `endorser` vouches for `new_key` as a bundle-signing key."""
    signature = endorser.sign(_ENDORSEMENT_CONTEXT + signing.raw_public_bytes(new_key))
    record = {
        "endorser": signing.fingerprint(endorser.public_key()),
        "key": signing.fingerprint(new_key),
        "signature": base64.b64encode(signature).decode(),
    }
    return json.dumps(record, sort_keys=True).encode() + b"\n"


def check_endorsement(
    data: bytes, new_key: Ed25519PublicKey, trusted: Sequence[Ed25519PublicKey]
) -> str | None:
    """Fingerprint of the trusted key whose endorsement of `new_key` is valid, else None."""
    try:
        record = json.loads(data)
        signature = base64.b64decode(record["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    message = _ENDORSEMENT_CONTEXT + signing.raw_public_bytes(new_key)
    for key in trusted:
        if signing.verify(key, message, signature):
            return signing.fingerprint(key)
    return None


def check_signature(
    bundle_dir: Path,
    manifest_bytes: bytes,
    trusted: Sequence[Ed25519PublicKey],
    revoked: Collection[str],
    report: VerifyReport,
) -> None:
    """Add findings for a bad signature or an untrusted/revoked signer; set report.signer."""
    signer = _load_signer(bundle_dir, report)
    signature = _load_signature(bundle_dir, report)
    if signer is None:
        return
    report.signer = signer
    if signature is not None and not signing.verify(signer, manifest_bytes, signature):
        report.add(SIGNATURE_NAME, "bad-signature", "signature does not match manifest.json")
    fingerprint = signing.fingerprint(signer)
    if fingerprint in revoked:
        report.add(SIGNER_NAME, "revoked-signer", f"{fingerprint} is on the revocation list")
        return
    usable = [key for key in trusted if signing.fingerprint(key) not in revoked]
    if any(signing.same_key(signer, key) for key in usable):
        return
    endorsement = bundle_dir / ENDORSEMENT_NAME
    if endorsement.is_file() and not endorsement.is_symlink():
        report.endorsed_by = check_endorsement(endorsement.read_bytes(), signer, usable)
        if report.endorsed_by is not None:
            return
    report.add(SIGNER_NAME, "unknown-signer", f"{fingerprint} is not a trusted key")


def _load_signer(bundle_dir: Path, report: VerifyReport) -> Ed25519PublicKey | None:
    path = bundle_dir / SIGNER_NAME
    if path.is_symlink() or not path.is_file():
        report.add(SIGNER_NAME, "missing", "the signer's public key is absent")
        return None
    try:
        return signing.parse_public_key(path.read_bytes(), source=SIGNER_NAME)
    except signing.SigningKeyError as exc:
        report.add(SIGNER_NAME, "bad-signature", str(exc))
        return None


def _load_signature(bundle_dir: Path, report: VerifyReport) -> bytes | None:
    path = bundle_dir / SIGNATURE_NAME
    if path.is_symlink() or not path.is_file():
        report.add(SIGNATURE_NAME, "missing", "the manifest signature is absent")
        return None
    try:
        signature = base64.b64decode(path.read_bytes().strip(), validate=True)
    except binascii.Error:
        signature = b""
    if len(signature) != 64:
        report.add(SIGNATURE_NAME, "bad-signature", "not a base64 Ed25519 signature")
        return None
    return signature
