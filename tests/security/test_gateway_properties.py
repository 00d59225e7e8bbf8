"""Issue 17: whatever a client sends, the gateway answers it as the client's fault or serves it;
it never answers 5xx for client input, never leaks an admission slot, and accounts for every
call of an authenticated key in the audit (api.request and api.completion, one pair each).

Generated requests go over a real socket to the real gateway (uvicorn on loopback) in front of
the engine simulator: bodies (valid, not JSON, wrong types, huge, deep; random n, max_tokens,
stream), headers (no key, a wrong key, a valid key; content types; a Content-Length that lies)
and disconnect points (the client leaves mid-body or mid-stream).
"""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.controlplane.conftest import new_tenant
from tests.controlplane.harness import ThreadGateway, make_settings
from tests.enginesim import SimHandle, start_simulator
from tests.security.conftest import admission_idle

MAX_BODY = 8 * 1024  # the gateway's body limit here: a "huge" body is cheap to send
BODY_TIMEOUT = 0.5  # a Content-Length that promises more than comes is refused this fast


@dataclass
class Target:
    gateway: ThreadGateway
    key: str
    db: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    sim: SimHandle = start_simulator(max_num_seqs=32, time_scale=0.001, models="sim-model")
    data_dir = tmp_path_factory.mktemp("props")
    gateway = ThreadGateway(
        # Every example comes from 127.0.0.1: the failed-authentication limit (its own tests in
        # test_auth_failure_flood.py) would block the address for valid keys after 20 wrong ones.
        make_settings(
            data_dir,
            [sim.url],
            max_body_bytes=MAX_BODY,
            body_timeout=BODY_TIMEOUT,
            auth_failures_per_address=100_000,
        )
    )
    with gateway.admin() as admin:
        key = new_tenant(admin, "fuzzed", max_tokens=16, max_concurrency=4, queue_size=64)
    yield Target(gateway, key, str(data_dir / "sparkplane.db"))
    gateway.stop()
    sim.stop()


# ---- what a client may send -------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what orjson writes; larger ones come as raw bytes below
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
counts = st.one_of(st.none(), st.integers(-3, 40), st.sampled_from(["2", 1.5, True, []]))
messages = st.one_of(
    st.just([{"role": "user", "content": "hi"}]),
    st.just([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
    st.just([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}]),
    json_values,
)  # fmt: skip


@st.composite
def valid_bodies(draw: st.DrawFn) -> bytes:
    """Requests the tenant may make (n up to its max_n of 4, max_tokens up to its cap)."""
    body: dict[str, Any] = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}
    body["n"] = draw(st.integers(1, 4))
    body["max_tokens"] = draw(st.one_of(st.none(), st.integers(1, 16)))
    body["stream"] = draw(st.booleans())
    if body["stream"] and draw(st.booleans()):
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


@st.composite
def chat_bodies(draw: st.DrawFn) -> bytes:
    """Chat requests with any of their fields missing or of any value."""
    body: dict[str, Any] = {"model": draw(st.sampled_from(["sim-model", "nope", 7, None]))}
    for name, values in (
        ("messages", messages),
        ("n", counts),
        ("best_of", counts),
        ("max_tokens", counts),
        ("max_completion_tokens", counts),
        ("stream", st.one_of(st.booleans(), st.none(), json_values)),
        ("stream_options", st.one_of(st.just({"include_usage": True}), json_values)),
        ("temperature", json_values),
    ):
        if draw(st.booleans()):
            body[name] = draw(values)
    return orjson.dumps(body)


HI = b'{"model":"sim-model","messages":[{"role":"user","content":"hi"}]'


def deep(depth: int) -> bytes:
    return b'{"model":"sim-model","messages":' + b"[" * depth + b"]" * depth + b"}"


bodies = st.one_of(
    valid_bodies(),
    valid_bodies(),
    chat_bodies(),
    chat_bodies(),
    st.binary(max_size=64),  # not JSON (or, rarely, JSON that is no object)
    json_values.map(orjson.dumps),  # JSON of any shape
    st.integers(100, 1100).map(deep),  # nesting around the bound and past orjson's limits
    st.sampled_from(
        [  # literals orjson reads in its own way
            HI + b',"n":1' + b"0" * 30 + b"}",  # an integer beyond 64 bits
            HI + b',"max_tokens":1e999}',  # a float beyond double
            HI.replace(b"hi", b"\\ud800") + b"}",  # a lone surrogate
        ]
    ),
    st.just(b'{"model":"sim-model","pad":"' + b"x" * MAX_BODY + b'"}'),  # over the size limit
)


@dataclass
class Exchange:
    auth: str  # "valid", "wrong", "none"
    body: bytes
    content_type: str | None
    length: str  # "exact", "short" (declares less), "long" (declares more), "chunked"
    leave: str  # "never", "mid_body", "after_head" (mid-stream for a stream)


exchanges = st.builds(
    Exchange,
    auth=st.sampled_from(["valid", "valid", "valid", "wrong", "none"]),
    body=bodies,
    content_type=st.sampled_from(["application/json", "text/plain", None]),
    length=st.sampled_from(["exact", "exact", "exact", "short", "long", "chunked"]),
    leave=st.sampled_from(["never", "never", "never", "mid_body", "after_head"]),
)


# ---- the wire ---------------------------------------------------------------------------


def request_bytes(ex: Exchange, key: str) -> tuple[bytes, int]:
    """The request and where its body starts."""
    lines = ["POST /v1/chat/completions HTTP/1.1", "Host: gateway", "Connection: close"]
    if ex.auth != "none":
        lines.append(f"Authorization: Bearer {key if ex.auth == 'valid' else 'sk-sp-wrong'}")
    if ex.content_type:
        lines.append(f"Content-Type: {ex.content_type}")
    body = ex.body
    if ex.length == "chunked":
        lines.append("Transfer-Encoding: chunked")
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    else:
        declared = {"exact": len(body), "short": len(body) // 2, "long": len(body) + 10}
        lines.append(f"Content-Length: {declared[ex.length]}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head + body, len(head)


def exchange(port: int, ex: Exchange, key: str) -> int | None:
    """Send one request; the answer's status, or None when the client left first."""
    data, body_at = request_bytes(ex, key)
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        if ex.leave == "mid_body" and len(data) > body_at + 1:
            sock.sendall(data[: body_at + (len(data) - body_at) // 2])
            return None
        sock.sendall(data)
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        if ex.leave == "never":  # read to the end, so the call is over when we look
            while chunk := sock.recv(65536):
                received += chunk
    if not received:
        return None
    return int(received.split(b" ", 2)[1])


def audit_counts(db: str) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        rows = dict(
            conn.execute(
                "SELECT kind, count(*) FROM audit_entries "
                "WHERE kind IN ('api.request', 'api.completion') GROUP BY kind"
            ).fetchall()
        )
    return rows.get("api.request", 0), rows.get("api.completion", 0)


def settled(check: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---- the property -----------------------------------------------------------------------


@pytest.mark.slow
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ex=exchanges)
def test_any_client_input_is_answered_accounted_and_leaves_no_slot(
    target: Target, ex: Exchange
) -> None:
    gateway = target.gateway
    before = audit_counts(target.db)
    status = exchange(gateway.settings.port, ex, target.key)
    event(f"status {status}")  # --hypothesis-show-statistics: what the examples reached
    assert status is None or status < 500, (status, ex)
    assert settled(lambda: admission_idle(gateway)), f"a slot is still held after {ex}"
    # A call of the valid key is one api.request and one api.completion, whatever happened;
    # a refused credential is no call (api.auth_failed, counted by secedge's tests).
    calls = 1 if ex.auth == "valid" else 0
    expected = (before[0] + calls, before[1] + calls)
    assert settled(lambda: audit_counts(target.db) == expected), (
        audit_counts(target.db), expected, status, ex)  # fmt: skip
