"""Offline check of OpenSSF model-signing signatures (`model.sig`, key or certificate mode).

The signature is a Sigstore bundle (JSON) holding a DSSE envelope whose payload is an in-toto
statement; its predicate lists every model file with its SHA-256. We verify the envelope's ECDSA
signature with a trusted public key, or with a certificate that chains to a trusted CA, then
compare the listed digests with the bundle manifest's (already checked against the disk), so
no file is hashed twice. Keyless (Sigstore/Rekor) signatures need an online trust root and are
reported as unsupported.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_FILE = "model.sig"
_PAYLOAD_TYPE = "application/vnd.in-toto+json"
_PREDICATE_TYPE = "https://model_signing/signature/v1.0"
_HASHES: dict[int, hashes.HashAlgorithm] = {
    256: hashes.SHA256(),
    384: hashes.SHA384(),
    521: hashes.SHA512(),
}


class ModelSignatureError(ValueError):
    """The model signature is malformed, untrusted, or does not match the files."""


@dataclass
class ModelTrust:
    """Public keys and CA certificates that may sign models."""

    keys: list[ec.EllipticCurvePublicKey] = field(default_factory=list)
    roots: list[x509.Certificate] = field(default_factory=list)

    @classmethod
    def from_paths(cls, paths: list[Path]) -> ModelTrust:
        trust = cls()
        for path in paths:
            try:
                data = path.read_bytes()
                if b"BEGIN CERTIFICATE" in data:
                    trust.roots.extend(x509.load_pem_x509_certificates(data))
                    continue
                key = serialization.load_pem_public_key(data)
            except (OSError, ValueError, UnsupportedAlgorithm) as exc:
                raise ModelSignatureError(f"{path}: not a PEM public key or certificate") from exc
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ModelSignatureError(f"{path}: model-signing keys are elliptic-curve keys")
            trust.keys.append(key)
        return trust

    def __bool__(self) -> bool:
        return bool(self.keys or self.roots)


def verify_model_signature(
    signature: bytes, file_digests: Mapping[str, str], trust: ModelTrust
) -> str:
    """Check `signature` against the model's files ({relative path: sha256}); return who signed."""
    try:
        bundle = json.loads(signature)
        envelope = bundle["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"])
        raw_signature = base64.b64decode(envelope["signatures"][0]["sig"])
        material = bundle["verificationMaterial"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ModelSignatureError(f"not a model-signing Sigstore bundle: {exc}") from exc
    if envelope.get("payloadType") != _PAYLOAD_TYPE:
        raise ModelSignatureError(f"unexpected DSSE payload type {envelope.get('payloadType')!r}")
    signed = b"DSSEv1 %d %s %d " % (len(_PAYLOAD_TYPE), _PAYLOAD_TYPE.encode(), len(payload))
    signed += payload
    if "publicKey" in material:
        signer = _verify_with_keys(signed, raw_signature, material["publicKey"], trust.keys)
    elif "x509CertificateChain" in material:
        signer = _verify_with_chain(signed, raw_signature, material["x509CertificateChain"], trust)
    else:
        raise ModelSignatureError("keyless (Sigstore) signatures cannot be verified offline")
    _compare(json.loads(payload), file_digests)
    return signer


def _ecdsa_ok(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(_HASHES[key.curve.key_size]))
    except (InvalidSignature, KeyError):
        return False
    return True


def _verify_with_keys(
    data: bytes, signature: bytes, identifier: dict[str, Any], keys: list[ec.EllipticCurvePublicKey]
) -> str:
    hint = identifier.get("hint")
    for key in keys:
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_hash = hashlib.sha256(pem).hexdigest()
        if (hint in (None, key_hash)) and _ecdsa_ok(key, data, signature):
            return f"key {key_hash[:16]}"
    raise ModelSignatureError("not signed by a trusted model-signing key")


def _verify_with_chain(
    data: bytes, signature: bytes, chain: dict[str, Any], trust: ModelTrust
) -> str:
    try:
        certs = [
            x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"]))
            for c in chain["certificates"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelSignatureError(f"unreadable certificate chain: {exc}") from exc
    if not certs:
        raise ModelSignatureError("empty certificate chain")
    leaf = certs[0]
    root = _chain_to_root(leaf, certs[1:], trust.roots)
    usage = _extension(leaf, x509.KeyUsage)
    eku = _extension(leaf, x509.ExtendedKeyUsage)
    can_sign = bool(usage and usage.digital_signature) or bool(
        eku and x509.oid.ExtendedKeyUsageOID.CODE_SIGNING in eku
    )
    if not can_sign:
        raise ModelSignatureError("the signing certificate is not allowed to sign")
    try:
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ModelSignatureError(f"unusable signing certificate key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not _ecdsa_ok(key, data, signature):
        raise ModelSignatureError("signature does not match the signing certificate")
    return f"certificate {leaf.subject.rfc4514_string()} (CA {root.subject.rfc4514_string()})"


def _chain_to_root(
    leaf: x509.Certificate, intermediates: list[x509.Certificate], roots: list[x509.Certificate]
) -> x509.Certificate:
    # Validity is judged at signing time (the leaf's start), as model-signing does.
    moment = leaf.not_valid_before_utc
    current = leaf
    for _ in range(8):
        if not current.not_valid_before_utc <= moment <= current.not_valid_after_utc:
            raise ModelSignatureError(f"{current.subject.rfc4514_string()} not valid at signing")
        for root in roots:
            if current.issuer == root.subject and _issued_by(current, root):
                return root
        issuer = next(
            (c for c in intermediates if c.subject == current.issuer and _issued_by(current, c)),
            None,
        )
        constraints = _extension(issuer, x509.BasicConstraints) if issuer else None
        if issuer is None or issuer is current or not (constraints and constraints.ca):
            break
        current = issuer
    raise ModelSignatureError("certificate chain does not lead to a trusted model-signing CA")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _extension(cert: x509.Certificate | None, kind: type) -> Any:
    if cert is None:
        return None
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _compare(statement: dict[str, Any], file_digests: Mapping[str, str]) -> None:
    if statement.get("predicateType") != _PREDICATE_TYPE:
        raise ModelSignatureError(f"unsupported predicate {statement.get('predicateType')!r}")
    predicate = statement["predicate"]
    method = predicate.get("serialization", {})
    if method.get("method") != "files" or method.get("hash_type") != "sha256":
        raise ModelSignatureError(f"unsupported serialization {method!r}")
    resources = predicate.get("resources", [])
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    if statement["subject"][0]["digest"]["sha256"] != root:
        raise ModelSignatureError("the statement's subject digest does not cover its resources")
    ignored = [SIGNATURE_FILE, *method.get("ignore_paths", [])]
    actual = {
        path: digest
        for path, digest in file_digests.items()
        if not any(path == i or path.startswith(i.rstrip("/") + "/") for i in ignored)
    }
    expected = {r["name"]: r["digest"] for r in resources}
    problems = [f"{p}: not in the bundle" for p in sorted(expected.keys() - actual.keys())]
    problems += [
        f"{p}: not covered by the signature" for p in sorted(actual.keys() - expected.keys())
    ]
    problems += [
        f"{p}: digest differs" for p in sorted(expected) if p in actual and actual[p] != expected[p]
    ]
    if problems:
        raise ModelSignatureError("; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else ""))
