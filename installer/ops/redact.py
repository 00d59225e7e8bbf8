"""Secret redaction for support bundles: what a vendor may see, with every secret masked.

Rules, applied to every text file that goes into a support bundle:
- PEM private key blocks;
- KEY=VALUE / "key": "value" / key: value where the key names a secret (token, password, ...);
- `Authorization: Bearer ...` and `Bearer ...`;
- credentials inside URLs (`scheme://user:password@host`);
- long random-looking tokens (letters and digits mixed, 24+ characters) that are not hex digests,
  which catches API keys wherever they appear (logs, events, ansible output).
Files that are secret by nature (databases, private keys, peppers, tokens, everything in the
secrets directory) are never collected at all.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import PurePath

REDACTED = "[REDACTED]"
_SECRET_NAMES = (
    "secret", "passw(?:or)?d", "passphrase", "token", "api[_-]?key", "pepper",
    "private[_-]?key", "credential", "auth(?:orization)?", "session", "cookie",
)  # fmt: skip
SECRET_WORDS = "(?:" + "|".join(_SECRET_NAMES) + ")"

_PEM = re.compile(r"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.*?-----END \1-----", re.DOTALL)
_ASSIGN = re.compile(rf"(?im)^(\s*[\w.-]*{SECRET_WORDS}[\w.-]*\s*[=:]\s*)(.+)$")
_JSON = re.compile(rf'(?i)("[\w.-]*{SECRET_WORDS}[\w.-]*"\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}}\s]+)')
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_CREDENTIALS = re.compile(r"([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{24,}(?![A-Za-z0-9_-])")
_HEX = re.compile(r"^[0-9a-fA-F]+$")

SECRET_FILE_SUFFIXES = (
    ".db",
    ".sqlite",
    ".sqlite3",
    ".db-wal",
    ".db-shm",
    ".db-journal",
    ".key",
    ".pem",
    ".p12",
    ".pfx",
)
SECRET_FILE_WORDS = ("pepper", "secret", "private", "id_rsa", "id_ed25519", "password", "token")
# sparkplane_secrets_dir's name (ROOT/etc/sparkplane/secrets): the metrics scrape token, the
# directory's bind password... A random token there may look like a word to the heuristics.
SECRETS_DIRECTORY = "secrets"


def is_secret_file(path: PurePath, secret_dirs: Collection[PurePath] = ()) -> bool:
    """Never collected: secret by name, or anywhere below a secrets directory (`secret_dirs`
    adds a site's own sparkplane_secrets_dir)."""
    name = path.name.lower()
    in_secret_dir = SECRETS_DIRECTORY in path.parent.parts or any(
        path.is_relative_to(directory) for directory in secret_dirs
    )
    return (
        in_secret_dir
        or name.endswith(SECRET_FILE_SUFFIXES)
        or any(word in name for word in SECRET_FILE_WORDS)
    )


def _token(match: re.Match[str]) -> str:
    token = match.group(0)
    looks_random = any(c.isdigit() for c in token) and any(c.isalpha() for c in token)
    return REDACTED if looks_random and not _HEX.match(token) else token


def redact_text(text: str) -> str:
    text = _PEM.sub(f"[REDACTED {REDACTED} PRIVATE KEY]", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    text = _JSON.sub(lambda m: f'{m.group(1)}"{REDACTED}"', text)
    text = _ASSIGN.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return _TOKEN.sub(_token, text)
