"""Tenant API keys: generation, the server-side pepper and the keyed hash stored in the database.

A key is `sk-sp-` followed by 43 URL-safe base64 characters (256 bits). The database keeps only
HMAC-SHA256(pepper, key) and a short visible prefix, so a stolen database without the pepper
file gives neither the keys nor a way to test guesses offline.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_SCHEME = "sk-sp-"
VISIBLE_PREFIX_LENGTH = len(KEY_SCHEME) + 6
PEPPER_BYTES = 32
PEPPER_FILE_NAME = "pepper"


class PepperError(RuntimeError):
    """The pepper file exists but cannot be used."""


def load_or_create_pepper(data_dir: Path) -> bytes:
    """Read DATA_DIR/pepper, creating it (mode 0600, 32 random bytes) on first start."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / PEPPER_FILE_NAME
    try:
        # O_EXCL: two processes starting at once must not both write a different pepper.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(PEPPER_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    pepper = path.read_bytes()
    if len(pepper) != PEPPER_BYTES:
        raise PepperError(
            f"{path} holds {len(pepper)} bytes, expected {PEPPER_BYTES}; "
            "restore it from backup (every API key depends on it)"
        )
    if path.stat().st_mode & 0o077:
        raise PepperError(f"{path} is readable by group or others; run chmod 600 {path}")
    return pepper


def generate_api_key() -> str:
    return KEY_SCHEME + secrets.token_urlsafe(32)


def visible_prefix(key: str) -> str:
    return key[:VISIBLE_PREFIX_LENGTH]


def hash_api_key(pepper: bytes, key: str) -> str:
    return hmac.new(pepper, key.encode("utf-8"), hashlib.sha256).hexdigest()


def looks_like_api_key(candidate: str) -> bool:
    """Cheap shape check so junk never reaches the hash or the cache."""
    return candidate.startswith(KEY_SCHEME) and 20 <= len(candidate) <= 200


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` readable by its owner only (0600), replacing any older file, durably.

    O_CREAT's mode applies to new files only, so an old file left 0644 is tightened before
    anything secret is written into it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
