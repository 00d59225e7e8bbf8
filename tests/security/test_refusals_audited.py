"""Issue 17, finding 8: refusals that tell of probing are audited as `http.refused` (a failed
CSRF check, a role that may not, a method not allowed, and what the HTTP server refuses by
itself: a malformed request, headers or a body too slow, too many connections from one address),
and repeats from one address are one summary entry per window. Failed before the fix (no entry
at all)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.api import admin_tokens
from tests.controlplane.console.client import ConsoleClient
from tests.controlplane.console.server import (
    PASSWORD,
    ConsoleServer,
    running_console,
    start_console_server,
)
from tests.security.conftest import new_address

WINDOW = 2.0


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    with running_console(tmp_path_factory, auth_failure_window=WINDOW, header_timeout=1.0,
                         body_timeout=1.0, max_connections_per_address=4) as running:  # fmt: skip
        yield running


def _refusals(server: ConsoleServer, address: str, kind: str = "http.refused") -> list[Any]:
    deadline = time.monotonic() + 5
    while True:
        rows = [f for _, _, f in server.audit_entries(kind) if f.get("client") == address]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_csrf_failure_is_audited(audited: ConsoleServer) -> None:
    name, _ = audited.add_user("admin")
    address = new_address()
    client = ConsoleClient(audited.url, local_address=address)
    assert client.signin(name, PASSWORD).status_code == 303
    assert client.post("/tenants", {"name": "x"}, csrf="forged").status_code == 403
    client.close()
    [entry] = _refusals(audited, address)
    assert entry["code"] == "csrf_failed" and entry["status"] == 403
    assert entry["endpoint"] == "/console/tenants" and entry["method"] == "POST"


def test_role_forbidden_is_audited(audited: ConsoleServer) -> None:
    name, _ = audited.add_user("auditor")
    address = new_address()
    client = ConsoleClient(audited.url, local_address=address)
    assert client.signin(name, PASSWORD).status_code == 303
    csrf = client.csrf("/")
    assert client.post("/tenants", {"name": "x"}, csrf=csrf).status_code == 403
    client.close()
    [entry] = _refusals(audited, address)
    assert entry["code"] == "role_forbidden"


def test_method_not_allowed_is_audited(audited: ConsoleServer) -> None:
    address = new_address()
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address)) as client:
        assert client.delete(audited.url + "/healthz").status_code == 405
    [entry] = _refusals(audited, address)
    assert entry["code"] == "method_not_allowed" and entry["method"] == "DELETE"


def test_a_request_the_server_refuses_itself_is_audited(audited: ConsoleServer) -> None:
    address = new_address()
    port = int(audited.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), source_address=(address, 0)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
        answer = _answer(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    # The one error shape and the security headers, like every answer of the app's own.
    headers = {line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:]}
    assert {b"content-security-policy", b"x-content-type-options"} <= headers, head
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_http_request" and error["type"] == "invalid_request_error"
    [entry] = _refusals(audited, address)
    assert entry["status"] == 400 and entry["code"] == "invalid_http_request"


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    return b"".join(iter(lambda: sock.recv(4096), b""))


def _admin_token(server: ConsoleServer) -> str:
    with server.sessions() as db:
        token = admin_tokens.rotate(db, server.app.state.pepper, server.unique("t"), "admin").token
        db.commit()
    return token


@pytest.mark.parametrize("code", ["header_timeout", "body_timeout"])
def test_a_request_too_slow_to_arrive_is_audited(audited: ConsoleServer, code: str) -> None:
    if code == "header_timeout":  # headers that never end
        sent = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    else:  # a body that never comes, on a route that reads it after the token
        token = _admin_token(audited).encode()
        sent = (b"POST /api/tenants HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                b"Authorization: Bearer " + token + b"\r\n\r\n")  # fmt: skip
    address = new_address()
    port = int(audited.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), source_address=(address, 0)) as sock:
        sock.settimeout(15)
        sock.sendall(sent)
        assert _answer(sock).startswith(b"HTTP/1.1 408")
    [entry] = _refusals(audited, address)
    assert entry["status"] == 408 and entry["code"] == code


def test_too_many_connections_from_one_address_is_audited(audited: ConsoleServer) -> None:
    address = new_address()
    port = int(audited.url.rsplit(":", 1)[1])
    held = [socket.create_connection(("127.0.0.1", port), source_address=(address, 0))
            for _ in range(4)]  # fmt: skip
    try:
        with socket.create_connection(("127.0.0.1", port), source_address=(address, 0)) as sock:
            sock.settimeout(15)
            assert _answer(sock).startswith(b"HTTP/1.1 429")
    finally:
        for sock in held:
            sock.close()
    [entry] = _refusals(audited, address)
    assert entry["status"] == 429 and entry["code"] == "too_many_connections"


def test_repeats_are_one_summary_per_window(audited: ConsoleServer) -> None:
    address = new_address()
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address)) as client:
        for _ in range(50):
            assert client.delete(audited.url + "/healthz").status_code == 405
    time.sleep(WINDOW + 1)
    assert len(_refusals(audited, address)) == 1
    [summary] = _refusals(audited, address, "http.refused_repeated")
    assert summary["count"] == 49 and summary["endpoints"] == ["/healthz"]
    assert summary["statuses"] == {"405": 49}


def test_open_windows_are_written_at_shutdown(tmp_path: Path) -> None:
    server = start_console_server(tmp_path / "data", auth_failure_window=600)
    address = new_address()
    try:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=address)) as client:
            for _ in range(10):
                assert client.delete(server.url + "/healthz").status_code == 405
        assert _refusals(server, address, "http.refused_repeated") == []  # window still open
    finally:
        server.stop()  # the lifespan's shutdown writes it
    [summary] = [f for _, _, f in server.audit_entries("http.refused_repeated")
                 if f.get("client") == address]  # fmt: skip
    assert summary["count"] == 9
