"""How the installer's own checks reach the control plane on the box: 127.0.0.1, and over
HTTPS when `controlplane.env` names a certificate, trusting exactly that certificate."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path


def pinned_client_context(cert_path: Path) -> ssl.SSLContext:
    """Trust exactly the certificate in `cert_path`, whatever names it carries.

    For the installer's own probes of the control plane on 127.0.0.1: a site's imported
    certificate rarely lists 127.0.0.1, but the server must still prove it holds this very
    certificate's key, which is a stronger check than a name.
    """
    context = ssl.create_default_context(cafile=str(cert_path))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the anchor
    context.check_hostname = False
    return context


def controlplane_loopback(env: Mapping[str, str]) -> tuple[str, ssl.SSLContext | None]:
    """Base URL on 127.0.0.1 and client TLS context for the control plane of `controlplane.env`."""
    port = env.get("SPARKPLANE_PORT", "8080")
    cert = env.get("SPARKPLANE_TLS_CERT")
    if not cert:
        return f"http://127.0.0.1:{port}", None
    return f"https://127.0.0.1:{port}", pinned_client_context(Path(cert))
