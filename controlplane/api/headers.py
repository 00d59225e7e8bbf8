"""The security headers of every response: CSP, X-Frame-Options, nosniff, Referrer-Policy.

One set for the whole application (issue 17, finding 7: /docs, /redoc, /static and errors had
none). `ControlPlaneApp` adds them to every response start, relayed /v1 calls included, unless
the response set its own: the console adds `Cache-Control: no-store`, and the two docs pages
send the looser policy their vendored scripts need (`docs_policy`), on those paths only.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import Message

# Same-origin only, no inline code: even an injected <script> would not run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
RAW_SECURITY_HEADERS = [
    (name.lower().encode("latin-1"), value.encode("latin-1"))
    for name, value in SECURITY_HEADERS.items()
]
_NAMES = frozenset(name for name, _ in RAW_SECURITY_HEADERS)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def docs_policy(html: str) -> str:
    """The CSP of a docs page: its own inline scripts by hash (Swagger UI's start-up call),
    inline styles (ReDoc injects them) and blob: workers (ReDoc's search); still no other
    origin, no framing, no form posts."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ).replace("'self' ;", "'self';")


def add_security_headers(message: Message) -> None:
    """Complete an `http.response.start` message with the headers it does not set itself."""
    headers = list(message.get("headers") or ())
    present = {name.lower() for name, _ in headers}
    if present.isdisjoint(_NAMES):
        headers.extend(RAW_SECURITY_HEADERS)
    else:
        headers.extend(header for header in RAW_SECURITY_HEADERS if header[0] not in present)
    message["headers"] = headers


def append_security_headers(message: Message) -> None:
    """The relay's variant: its responses never set these, so no check is needed (hot path)."""
    message["headers"] = [*message.get("headers", ()), *RAW_SECURITY_HEADERS]
