"""TLS: a locally issued server certificate really serves HTTPS that a client can verify."""

from __future__ import annotations

import http.server
import ssl
import stat
import threading
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from installer.tls import TlsError, import_certificate, issue_server_certificate


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello over tls")

    def log_message(self, *args: object) -> None:
        pass


def serve_tls(tls_dir: Path) -> http.server.HTTPServer:
    server = http.server.HTTPServer(("127.0.0.1", 0), Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_dir / "server.crt", tls_dir / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_local_ca_certificate_verifies_for_its_names(tmp_path: Path) -> None:
    cert = issue_server_certificate(tmp_path, ["localhost", "127.0.0.1", "spark-01.site.lan"])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "spark-01.site.lan" in sans.get_values_for_type(x509.DNSName)
    for name in ("server.key", "ca.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    server = serve_tls(tmp_path)
    try:
        url = f"https://localhost:{server.server_address[1]}/"
        trusting = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        with urllib.request.urlopen(url, context=trusting, timeout=10) as response:
            assert response.read() == b"hello over tls"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=10)
    finally:
        server.shutdown()


def test_reissue_keeps_the_ca(tmp_path: Path) -> None:
    issue_server_certificate(tmp_path, ["localhost"])
    ca = (tmp_path / "ca.crt").read_bytes()
    issue_server_certificate(tmp_path, ["localhost", "10.0.0.5"])
    assert (tmp_path / "ca.crt").read_bytes() == ca


def test_import_checks_that_key_and_certificate_belong_together(tmp_path: Path) -> None:
    site_a, site_b = tmp_path / "a", tmp_path / "b"
    issue_server_certificate(site_a, ["a.site.lan"])
    issue_server_certificate(site_b, ["b.site.lan"])
    target = tmp_path / "target"
    with pytest.raises(TlsError, match="is not the private key"):
        import_certificate(target, site_a / "server.crt", site_b / "server.key")
    imported = import_certificate(target, site_a / "server.crt", site_a / "server.key")
    assert "a.site.lan" in imported.subject.rfc4514_string()
    assert stat.S_IMODE((target / "server.key").stat().st_mode) == 0o600


def test_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="not a DNS name"):
        issue_server_certificate(tmp_path, ["has space"])
