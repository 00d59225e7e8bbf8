"""The appliance's trust directory of bundle-signing keys (`ROOT/etc/sparkplane/trust/`).

Layout: one PEM public key per `*.pub` file, and `revoked` with one fingerprint per line
(`#` comments allowed). A revoked key is refused even if it is still present as a `.pub` file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controlplane.core import signing
from installer.bundle.signature import check_endorsement

REVOKED_NAME = "revoked"
TRUST_SUBDIR = Path("etc/sparkplane/trust")


def key_file_name(key: Ed25519PublicKey) -> str:
    """The file a trusted key is stored in: `key-<first 16 hex of its SHA-256>.pub`."""
    return f"key-{hashlib.sha256(signing.raw_public_bytes(key)).hexdigest()[:16]}.pub"


def appliance_trust_dir(root: Path) -> Path:
    """The trust directory of an appliance installed under `root` (`/` on a real box)."""
    return Path(root) / TRUST_SUBDIR


class TrustError(RuntimeError):
    """No usable trusted key, a declined or revoked key, or an unreadable trust directory."""


class TrustStore:
    def __init__(self, trust_dir: Path) -> None:
        self.trust_dir = Path(trust_dir)

    def all_keys(self) -> list[Ed25519PublicKey]:
        if not self.trust_dir.is_dir():
            return []
        keys = []
        for path in sorted(self.trust_dir.glob("*.pub")):
            try:
                keys.append(signing.load_public_key(path))
            except signing.SigningKeyError as exc:
                raise TrustError(f"unreadable key in trust directory: {exc}") from exc
        return keys

    def keys(self) -> list[Ed25519PublicKey]:
        """Trusted keys, revoked ones left out."""
        revoked = self.revoked_fingerprints()
        return [key for key in self.all_keys() if signing.fingerprint(key) not in revoked]

    def revoked_fingerprints(self) -> set[str]:
        path = self.trust_dir / REVOKED_NAME
        if not path.is_file():
            return set()
        lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
        return {line for line in lines if line}

    def is_trusted(self, key: Ed25519PublicKey) -> bool:
        return any(signing.same_key(key, known) for known in self.keys())

    def add(self, key: Ed25519PublicKey) -> Path:
        """Store `key` (idempotent); a revoked key cannot be added back."""
        fingerprint = signing.fingerprint(key)
        if fingerprint in self.revoked_fingerprints():
            raise TrustError(f"key {fingerprint} is revoked; refusing to trust it")
        self.trust_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        path = self.trust_dir / key_file_name(key)
        if not path.exists():
            path.write_bytes(signing.public_pem(key))
            path.chmod(0o644)
        return path

    def revoke(self, fingerprint: str) -> None:
        if not fingerprint.startswith("SHA256:"):
            raise TrustError(f"not a key fingerprint: {fingerprint!r} (expected SHA256:...)")
        if fingerprint in self.revoked_fingerprints():
            return
        self.trust_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        with (self.trust_dir / REVOKED_NAME).open("a", encoding="utf-8") as handle:
            handle.write(fingerprint + "\n")

    def accept_rotation(self, new_key: Ed25519PublicKey, endorsement: bytes) -> str:
        """Trust `new_key` if a trusted key endorsed it; returns the endorser's fingerprint."""
        endorser = check_endorsement(endorsement, new_key, self.keys())
        if endorser is None:
            raise TrustError(
                f"key {signing.fingerprint(new_key)} carries no valid endorsement by a trusted key"
            )
        self.add(new_key)
        return endorser


def load_key_source(source: Path) -> list[Ed25519PublicKey]:
    """Keys from a PEM file, or from every `*.pub` of a directory."""
    if source.is_dir():
        keys = [signing.load_public_key(path) for path in sorted(source.glob("*.pub"))]
        if not keys:
            raise TrustError(f"no *.pub key files in {source}")
        return keys
    try:
        return [signing.load_public_key(source)]
    except signing.SigningKeyError as exc:
        raise TrustError(str(exc)) from exc


def resolve_trust(
    trust_dir: Path,
    trust_arg: Path | None,
    assume_yes: bool,
    confirm: Callable[[str], bool],
    notify: Callable[[str], None] | None = None,
) -> list[Ed25519PublicKey]:
    """The keys an install may trust; a key given on the command line is confirmed, then stored."""
    store = TrustStore(trust_dir)
    if trust_arg is not None:
        revoked = store.revoked_fingerprints()
        for key in load_key_source(Path(trust_arg)):
            fingerprint = signing.fingerprint(key)
            if fingerprint in revoked:
                raise TrustError(f"key {fingerprint} from {trust_arg} is revoked")
            if store.is_trusted(key):
                continue
            question = f"Trust bundle-signing key {fingerprint} (from {trust_arg})?"
            if assume_yes:
                if notify is not None:
                    notify(f"trusting bundle-signing key {fingerprint} (--yes)")
            elif not confirm(question):
                raise TrustError(f"key {fingerprint} was not confirmed; nothing trusted")
            store.add(key)
    keys = store.keys()
    if not keys:
        raise TrustError(
            f"no trusted bundle-signing key in {trust_dir}; give one with --trust on first install"
        )
    return keys


def load_trust_source(source: Path) -> tuple[list[Ed25519PublicKey], set[str]]:
    """(keys, revoked fingerprints) from a key file or a trust directory, for verify/unpack."""
    if not source.exists():
        raise TrustError(f"trust source {source} does not exist (give --trust FILE|DIR)")
    if source.is_dir():
        store = TrustStore(source)
        keys = store.keys()
        if not keys:
            raise TrustError(f"no usable *.pub key files in {source}")
        return keys, store.revoked_fingerprints()
    return load_key_source(source), set()
