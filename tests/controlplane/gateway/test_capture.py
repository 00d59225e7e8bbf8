"""Content capture through the HTTP gateway (engine simulator): what the client saw is what is
sealed, the completion entry names the sealed blob, nothing is kept in clear, nothing for a
tenant that did not opt in."""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from sqlalchemy import func, select

from controlplane.audit.captured import CAPTURED_FIELDS, CHOICE_FIELDS, ContentStore
from controlplane.audit.models import AuditContent, AuditEntry
from tests.controlplane.conftest import new_tenant
from tests.controlplane.harness import ThreadGateway, make_settings
from tests.enginesim import SimHandle, start_simulator

REPO = Path(__file__).resolve().parents[3]
MARKER = "capture-marker-" + uuid.uuid4().hex  # in every prompt; must never be in the DB in clear
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator(max_num_seqs=16, time_scale=0.01, models="sim-model",
                             reasoning_tokens=2)  # fmt: skip
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def gateway(sim: SimHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadGateway]:
    server = ThreadGateway(make_settings(tmp_path_factory.mktemp("capture"), [sim.url]))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(gateway: ThreadGateway) -> dict[str, str]:
    with gateway.admin() as admin:
        return {
            "on": new_tenant(admin, "captured", capture_content=True),
            "off": new_tenant(admin, "uncaptured"),
        }


def call(gateway: ThreadGateway, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(gateway.url + path, json=body, headers=headers, timeout=30)


def streamed(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [orjson.loads(event) for event in events[:-1]]


def completion_entry(gateway: ThreadGateway, request_id: str) -> dict[str, Any]:
    """The call's api.completion fields (queued audit: it commits just after the answer)."""
    engine = gateway.app.state.db_engine
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            rows = conn.execute(
                select(AuditEntry.data).where(AuditEntry.kind == "api.completion")
            ).all()
        for (data,) in rows:
            fields = orjson.loads(data)
            if fields["request_id"] == request_id:
                return dict(fields)
        time.sleep(0.05)
    raise AssertionError(f"no api.completion entry for {request_id}")


def sealed_record(gateway: ThreadGateway, response: httpx.Response) -> dict[str, Any]:
    """The record sealed for this call, checked against its completion entry."""
    request_id = response.headers["x-request-id"]
    entry = completion_entry(gateway, request_id)
    store = ContentStore(gateway.app.state.db_engine, gateway.app.state.content_vault)
    found = store.by_request([request_id])[request_id]
    assert entry["content_sha256"] == found.digest  # the chain names exactly this blob
    assert found.record is not None
    return found.record


def test_plain_chat_is_sealed_as_answered(gateway: ThreadGateway, keys: dict[str, str]) -> None:
    body = {"model": "sim-model", "max_tokens": 6,
            "messages": [{"role": "user", "content": f"plain {MARKER}"}]}  # fmt: skip
    response = call(gateway, keys["on"], "/v1/chat/completions", body)
    assert response.status_code == 200
    message = response.json()["choices"][0]["message"]
    record = sealed_record(gateway, response)
    assert tuple(record) == CAPTURED_FIELDS
    assert record["request"] == body and record["finished"] is True
    assert record["endpoint"] == "chat/completions" and record["stream"] is False
    (choice,) = record["choices"]
    assert tuple(choice) == CHOICE_FIELDS
    assert choice["text"] == message["content"] and choice["reasoning"] == message["reasoning"]
    assert choice["reasoning"] and choice["finish_reason"] == "length"


def test_streamed_chat_reassembles_text_and_reasoning(
    gateway: ThreadGateway, keys: dict[str, str]
) -> None:
    body = {"model": "sim-model", "max_tokens": 8, "stream": True,
            "messages": [{"role": "user", "content": f"stream {MARKER}"}]}  # fmt: skip
    response = call(gateway, keys["on"], "/v1/chat/completions", body)
    chunks = streamed(response)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    text = "".join(d.get("content") or "" for d in deltas)
    reasoning = "".join(d.get("reasoning") or "" for d in deltas)
    record = sealed_record(gateway, response)
    assert record["stream"] is True and record["request"] == body
    (choice,) = record["choices"]
    assert (choice["text"], choice["reasoning"]) == (text, reasoning)
    assert text and reasoning and choice["finish_reason"] == "length"


def test_streamed_tool_call_is_joined_from_its_pieces(
    gateway: ThreadGateway, keys: dict[str, str]
) -> None:
    body = {"model": "sim-model", "max_tokens": 20, "stream": True, "tools": TOOLS,
            "messages": [{"role": "user", "content": f"tool {MARKER}"}]}  # fmt: skip
    response = call(gateway, keys["on"], "/v1/chat/completions", body)
    deltas = [c["choices"][0]["delta"] for c in streamed(response) if c["choices"]]
    pieces = [delta.get("tool_calls") for delta in deltas]
    arguments = "".join(p[0]["function"].get("arguments") or "" for p in pieces if p)
    assert len([p for p in pieces if p]) > 1, "the tool call came in several pieces"
    (choice,) = sealed_record(gateway, response)["choices"]
    (tool_call,) = choice["tool_calls"]
    assert tool_call["name"] == "lookup" and tool_call["arguments"] == arguments
    assert orjson.loads(arguments) == {"sim": True} and choice["finish_reason"] == "tool_calls"


def test_completions_plain_and_streamed(gateway: ThreadGateway, keys: dict[str, str]) -> None:
    body: dict[str, Any] = {"model": "sim-model", "max_tokens": 5, "prompt": f"once {MARKER}"}
    plain = call(gateway, keys["on"], "/v1/completions", body)
    (choice,) = sealed_record(gateway, plain)["choices"]
    assert choice["text"] == plain.json()["choices"][0]["text"]
    stream = call(gateway, keys["on"], "/v1/completions", {**body, "stream": True})
    text = "".join(c["choices"][0]["text"] for c in streamed(stream) if c["choices"])
    record = sealed_record(gateway, stream)
    assert record["endpoint"] == "completions" and record["choices"][0]["text"] == text


def test_embeddings_capture_the_input(gateway: ThreadGateway, keys: dict[str, str]) -> None:
    body = {"model": "sim-model", "input": [f"embed {MARKER}", "second"]}
    response = call(gateway, keys["on"], "/v1/embeddings", body)
    assert response.status_code == 200
    record = sealed_record(gateway, response)
    assert record["endpoint"] == "embeddings" and record["request"] == body
    assert record["choices"] == []  # the vectors are not captured


def test_nothing_is_kept_for_a_tenant_that_did_not_opt_in(
    gateway: ThreadGateway, keys: dict[str, str]
) -> None:
    body = {"model": "sim-model", "max_tokens": 3, "stream": True,
            "messages": [{"role": "user", "content": f"off {MARKER}"}]}  # fmt: skip
    response = call(gateway, keys["off"], "/v1/chat/completions", body)
    streamed(response)
    entry = completion_entry(gateway, response.headers["x-request-id"])
    assert "content_sha256" not in entry
    with gateway.app.state.db_engine.connect() as conn:
        kept = conn.execute(select(func.count()).where(AuditContent.tenant == "uncaptured"))
        assert kept.scalar() == 0


def test_a_stream_the_client_leaves_is_sealed_as_unfinished(
    gateway: ThreadGateway, keys: dict[str, str]
) -> None:
    body = {"model": "sim-model", "max_tokens": 400, "stream": True,
            "messages": [{"role": "user", "content": f"leave {MARKER}"}]}  # fmt: skip
    headers = {"Authorization": f"Bearer {keys['on']}"}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body,
                      headers=headers, timeout=30) as response:  # fmt: skip
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if '"content"' in line:
                break  # leave after the first words
    entry = completion_entry(gateway, request_id)
    assert entry["outcome"] == "cancelled"
    store = ContentStore(gateway.app.state.db_engine, gateway.app.state.content_vault)
    record = store.by_request([request_id])[request_id].record
    assert record is not None and record["finished"] is False
    assert record["choices"] and record["choices"][0]["finish_reason"] is None


def test_a_client_that_leaves_while_its_content_is_sealed_still_gets_its_entry(
    gateway: ThreadGateway, keys: dict[str, str]
) -> None:
    """A client that has its last token may close the connection while the gateway seals the
    content (before `[DONE]`, which is sent only after the completion entry is recorded); the
    entry must be written all the same."""
    body = {"model": "sim-model", "max_tokens": 40, "stream": True,
            "messages": [{"role": "user", "content": f"done {MARKER}"}]}  # fmt: skip
    headers = {"Authorization": f"Bearer {keys['on']}"}
    database = Path(gateway.settings.data_dir) / "sparkplane.db"
    blocker = sqlite3.connect(database, timeout=30, isolation_level=None)
    try:
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body,
                          headers=headers, timeout=30) as response:  # fmt: skip
            request_id = response.headers["x-request-id"]
            for line in response.iter_lines():
                if '"content"' in line and not blocker.in_transaction:
                    blocker.execute("BEGIN IMMEDIATE")  # sealing (a write) now waits behind it
                if '"finish_reason":' in line and '"finish_reason":null' not in line:
                    break  # the last token: leave without waiting for [DONE]
        time.sleep(0.5)  # the gateway sees the disconnect while the seal still waits
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    entry = completion_entry(gateway, request_id)
    assert entry["outcome"] in ("ok", "cancelled") and entry["content_sha256"]
    store = ContentStore(gateway.app.state.db_engine, gateway.app.state.content_vault)
    assert store.by_request([request_id])[request_id].digest == entry["content_sha256"]


def test_no_captured_text_in_the_database_files(
    gateway: ThreadGateway, keys: dict[str, str]
) -> None:
    """Runs after the calls above: the marker of every prompt is nowhere in the SQLite file or
    its WAL, while the sealed tokens are (so these are the bytes that hold the content)."""
    engine = gateway.app.state.db_engine
    with engine.connect() as conn:
        tokens = [row[0] for row in conn.execute(select(AuditContent.sealed))]
    assert len(tokens) >= 7
    database = Path(gateway.settings.data_dir) / "sparkplane.db"
    stored = b"".join(
        path.read_bytes() for path in (database, database.with_name("sparkplane.db-wal"))
        if path.exists()
    )  # fmt: skip
    assert MARKER.encode() not in stored
    assert all(token[:40].encode() in stored for token in tokens)


def test_the_docs_list_exactly_the_sealed_fields(
    gateway: ThreadGateway, keys: dict[str, str]
) -> None:
    """docs/audit.md's list of captured fields is what the gateway really seals."""
    section = (REPO / "docs" / "audit.md").read_text().split("### What is captured")[1]
    section = section.split("\n#")[0]
    record_fields = re.findall(r"^- `(\w+)`", section, flags=re.M)
    choice_fields = re.findall(r"^  - `(\w+)`", section, flags=re.M)
    body = {"model": "sim-model", "max_tokens": 4,
            "messages": [{"role": "user", "content": "fields"}]}  # fmt: skip
    record = sealed_record(gateway, call(gateway, keys["on"], "/v1/chat/completions", body))
    assert record_fields == list(record)
    assert choice_fields == list(record["choices"][0])


PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.postgres
def test_capture_on_postgresql_in_batches(
    sim: SimHandle, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The same path on PostgreSQL, 16 calls at once (their rows may share a group commit)."""
    schema = f"capture_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    server = ThreadGateway(
        make_settings(tmp_path_factory.mktemp("pg"), [sim.url], database_url=url)
    )
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "pgcaptured", capture_content=True)
        body = {"model": "sim-model", "max_tokens": 6, "stream": True,
                "messages": [{"role": "user", "content": f"pg {MARKER}"}]}  # fmt: skip
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: call(server, key, "/v1/chat/completions", body),
                                      range(16)))  # fmt: skip
        for response in responses:
            text = "".join(c["choices"][0]["delta"].get("content") or ""
                           for c in streamed(response) if c["choices"])  # fmt: skip
            (choice,) = sealed_record(server, response)["choices"]
            assert choice["text"] == text
    finally:
        server.stop()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
