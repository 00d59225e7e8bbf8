"""Under TLS the session cookie is Secure and carries the __Host- prefix."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.controlplane.console.client import csrf_of
from tests.controlplane.console.server import ConsoleServer, start_console_server


def write_certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    folder = tmp_path_factory.mktemp("tls")
    running = start_console_server(folder / "data", tls=write_certificate(folder))
    yield running
    running.stop()


def test_session_cookie_is_secure_with_host_prefix(tls_server: ConsoleServer) -> None:
    name, password = tls_server.add_user("admin")
    with httpx.Client(base_url=tls_server.url, verify=False, follow_redirects=False) as client:
        form = client.get("/console/signin")
        signin_cookie = form.headers["set-cookie"]
        assert "Secure" in signin_cookie and "HttpOnly" in signin_cookie
        response = client.post("/console/signin", data={
            "username": name, "password": password, "csrf_token": csrf_of(form.text)})  # fmt: skip
        assert response.status_code == 303
        cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
        session = next(c for c in cookies if c.startswith("__Host-sparkplane_console="))
        for attribute in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
            assert attribute in session
        assert "Domain" not in session
        assert client.get("/console/tenants").status_code == 200
