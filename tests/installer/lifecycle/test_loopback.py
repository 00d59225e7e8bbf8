"""The installer's probes of the control plane pin the certificate it serves."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from installer.lifecycle.loopback import controlplane_loopback
from installer.ops.tls import issue_server_certificate
from tests.installer.ops.test_tls import serve_tls


def test_loopback_probe_pins_the_served_certificate(tmp_path: Path) -> None:
    served, other = tmp_path / "served", tmp_path / "other"
    issue_server_certificate(served, ["spark-01.site.lan"])  # no 127.0.0.1 among the names
    issue_server_certificate(other, ["spark-01.site.lan"])
    server = serve_tls(served)
    try:
        port = str(server.server_address[1])
        env = {"SPARKPLANE_PORT": port, "SPARKPLANE_TLS_CERT": str(served / "server.crt")}
        url, context = controlplane_loopback(env)
        assert url == f"https://127.0.0.1:{port}"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            assert response.read() == b"hello over tls"
        env["SPARKPLANE_TLS_CERT"] = str(other / "server.crt")  # same names, another key
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(url, context=controlplane_loopback(env)[1], timeout=10)
    finally:
        server.shutdown()
    assert controlplane_loopback({"SPARKPLANE_PORT": "9"}) == ("http://127.0.0.1:9", None)
