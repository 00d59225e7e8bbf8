"""`sparkplane serve` over HTTPS with the certificate the installer issues (installer/ops/tls.py).

A real server process on 127.0.0.1, a client that trusts only the local CA, and the refusals:
plain HTTP on the TLS port, a key others can read (production), half a pair, a mismatched pair.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.core.config import ConfigError, load_settings
from installer.ops.tls import issue_server_certificate
from tests.controlplane.harness import ADMIN_TOKEN, REPO_ROOT, free_port

SERVE = [sys.executable, "-c", "from installer.cli.main import main; main()", "serve"]


def production_env(tmp_path: Path, tls_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKPLANE_")}
    env.update(
        SPARKPLANE_ENVIRONMENT="production",
        SPARKPLANE_DATA_DIR=str(tmp_path / "data"),
        # Nothing listens there: /healthz and the 401 of /v1/models do not need an engine.
        SPARKPLANE_ENGINE_URLS=f"http://127.0.0.1:{free_port()}/v1",
        SPARKPLANE_ADMIN_TOKEN=ADMIN_TOKEN,
        SPARKPLANE_HOST="127.0.0.1",
        SPARKPLANE_PORT=str(port),
        SPARKPLANE_TLS_CERT=str(tls_dir / "server.crt"),
        SPARKPLANE_TLS_KEY=str(tls_dir / "server.key"),
    )
    return env


def trusting(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp_path = tmp_path_factory.mktemp("https")
    tls_dir = tmp_path / "tls"
    issue_server_certificate(tls_dir, ["localhost", "127.0.0.1"])
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            SERVE,
            env=production_env(tmp_path, tls_dir, port),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"serve exited early:\n{log_path.read_text()}"
            try:
                httpx.get(url + "/healthz", verify=trusting(tls_dir / "ca.crt"), timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"no HTTPS answer:\n{log_path.read_text()}"
                time.sleep(0.3)
        yield url, tls_dir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_https_verifies_against_the_local_ca(https_server: tuple[str, Path]) -> None:
    url, tls_dir = https_server
    for base in (url, url.replace("127.0.0.1", "localhost")):  # both SANs of the certificate
        with httpx.Client(base_url=base, verify=trusting(tls_dir / "ca.crt")) as client:
            health = client.get("/healthz")
            assert health.status_code == 200
            assert health.url.scheme == "https"
            models = client.get("/v1/models")
            assert models.status_code == 401
            assert models.json()["error"]["type"]


def test_the_certificate_is_not_trusted_without_the_ca(https_server: tuple[str, Path]) -> None:
    url, _ = https_server
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url + "/healthz", verify=ssl.create_default_context())


def test_plain_http_is_refused_on_the_tls_port(https_server: tuple[str, Path]) -> None:
    url, _ = https_server
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5)


def test_console_cookies_are_secure_when_uvicorn_terminates_tls(
    https_server: tuple[str, Path],
) -> None:
    url, tls_dir = https_server
    form = httpx.get(url + "/console/signin", verify=trusting(tls_dir / "ca.crt"))
    assert form.status_code == 200
    cookies = [v for k, v in form.headers.multi_items() if k == "set-cookie"]
    assert cookies and all("Secure" in cookie for cookie in cookies)


def run_serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(SERVE, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_production_refuses_a_key_readable_by_others(tmp_path: Path) -> None:
    tls_dir = tmp_path / "tls"
    issue_server_certificate(tls_dir, ["127.0.0.1"])
    (tls_dir / "server.key").chmod(0o640)
    result = run_serve(production_env(tmp_path, tls_dir, free_port()))
    assert result.returncode == 1
    assert "SPARKPLANE_TLS_KEY" in result.stderr and "0640" in result.stderr
    assert "chmod 600" in result.stderr


def test_serve_refuses_a_certificate_with_someone_elses_key(tmp_path: Path) -> None:
    tls_dir, other = tmp_path / "tls", tmp_path / "other"
    issue_server_certificate(tls_dir, ["127.0.0.1"])
    issue_server_certificate(other, ["127.0.0.1"])
    env = production_env(tmp_path, tls_dir, free_port())
    env["SPARKPLANE_TLS_KEY"] = str(other / "server.key")
    result = run_serve(env)
    assert result.returncode == 1
    assert "cannot serve HTTPS" in result.stderr and "KEY_VALUES_MISMATCH" in result.stderr


def test_certificate_and_key_go_together(tmp_path: Path) -> None:
    issue_server_certificate(tmp_path, ["127.0.0.1"])
    with pytest.raises(ConfigError, match="go together"):
        load_settings(data_dir=tmp_path, tls_cert=tmp_path / "server.crt")
    with pytest.raises(ConfigError, match="go together"):
        load_settings(data_dir=tmp_path, tls_key=tmp_path / "server.key")
    with pytest.raises(ConfigError, match="is not a file"):
        load_settings(data_dir=tmp_path, tls_cert=tmp_path / "gone.crt", tls_key=tmp_path)


def test_development_accepts_a_readable_key(tmp_path: Path) -> None:
    issue_server_certificate(tmp_path, ["127.0.0.1"])
    (tmp_path / "server.key").chmod(0o644)
    settings = load_settings(
        data_dir=tmp_path, tls_cert=tmp_path / "server.crt", tls_key=tmp_path / "server.key"
    )
    assert settings.tls_key == tmp_path / "server.key"
