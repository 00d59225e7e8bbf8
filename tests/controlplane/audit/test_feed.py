"""The SIEM feed against a real rsyslog (TLS, TCP, UDP), a JSON Lines file, a receiver that stops
reading, and two PostgreSQL replicas."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, select

from controlplane.audit import AuditWriter
from controlplane.audit.chain import export_line
from controlplane.audit.feed import sender
from controlplane.audit.feed.messages import FACILITY_LOG_AUDIT
from controlplane.audit.feed.sender import SiemFeed
from controlplane.audit.feed.transports import TargetError, TlsFiles, make_transport, parse_target
from controlplane.audit.models import AuditCheckpoint, AuditEntry
from controlplane.core.config import ConfigError, load_settings
from tests.controlplane.audit.conftest import pg_schema_engine
from tests.controlplane.audit.receivers import TcpReceiver
from tests.controlplane.audit.rsyslog import Received, Rsyslog


def start_feed(
    engine: Engine, writer: AuditWriter, target: str, ca: Path | None = None
) -> SiemFeed:
    feed = SiemFeed(engine, make_transport(parse_target(target), TlsFiles(ca=ca)))
    writer.on_commit(feed.wake)
    feed.start()
    return feed


def chain(engine: Engine) -> tuple[dict[bytes, tuple[int, str, str | None]], dict[bytes, int]]:
    """Export line -> (seq, kind, tenant) for every entry; checkpoint line -> size."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(AuditEntry.seq, AuditEntry.kind, AuditEntry.tenant, AuditEntry.envelope,
                   AuditEntry.data, AuditEntry.hash)
        ).all()  # fmt: skip
        notes = conn.execute(select(AuditCheckpoint.size, AuditCheckpoint.note)).all()
    entries = {
        export_line(bytes(h), bytes(e), d and bytes(d))[:-1]: (seq, kind, tenant)
        for seq, kind, tenant, e, d, h in rows
    }
    checkpoints = {orjson.dumps({"checkpoint": note}): size for size, note in notes}
    return entries, checkpoints


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check.__doc__ or check}")
        await asyncio.sleep(0.1)


def ours(messages: list[Received], engine: Engine) -> list[Received]:
    """The messages that carry this test's chain (the session's rsyslog has others too)."""
    entries, checkpoints = chain(engine)
    return [m for m in messages if m.payload in entries or m.payload in checkpoints]


@pytest.fixture
def feeds() -> Iterator[list[SiemFeed]]:
    started: list[SiemFeed] = []
    yield started
    for feed in started:
        feed.stop()


@pytest.mark.parametrize("scheme", ["tls", "tcp", "udp"])
async def test_entries_and_checkpoints_arrive_as_rfc5424_messages_in_chain_order(
    scheme, rsyslog: Rsyslog, writer, sqlite_engine, feeds
):
    await asyncio.gather(*(writer.record("api.request", tenant="acme", n=i) for i in range(25)))
    await writer.record("admin.tenant_create", actor="root")
    feeds.append(start_feed(sqlite_engine, writer, rsyslog.target(scheme), rsyslog.ca))
    await writer.record("console.signin_failed", user="mallory")  # arrives while streaming
    await writer.checkpoint_now()
    entries, checkpoints = chain(sqlite_engine)

    def complete() -> bool:
        return len(ours(rsyslog.received(scheme), sqlite_engine)) == len(entries) + len(checkpoints)

    await eventually(complete)
    received = ours(rsyslog.received(scheme), sqlite_engine)
    order = []
    for message in received:
        if message.payload in checkpoints:
            size = checkpoints[message.payload]
            assert message.msgid == "audit.checkpoint" and message.params["size"] == str(size)
            order.append((size, 1))
            continue
        seq, kind, tenant = entries[message.payload]
        line = orjson.loads(message.payload)
        assert message.params["seq"] == str(seq) == str(line["e"]["seq"])
        assert message.params["hash"] == line["h"] and message.params["kind"] == kind
        assert message.params.get("tenant") == tenant and message.msgid == kind
        severity = {"admin.tenant_create": 5, "console.signin_failed": 4}.get(kind, 6)
        assert message.pri == FACILITY_LOG_AUDIT * 8 + severity
        order.append((seq, 0))
    if scheme != "udp":  # UDP may reorder in principle; TCP keeps the chain's order
        assert order == sorted(order)
    if scheme == "tls":
        await eventually(lambda: feeds[0].status.backlog == 0 and feeds[0].status.connected)
        assert feeds[0].status.delivered_seq == max(seq for seq, _, _ in entries.values())


async def test_a_receiver_restart_loses_nothing(rsyslog: Rsyslog, writer, sqlite_engine, feeds):
    """rsyslog stopped (SIGTERM) and started again while entries stream in: every entry reaches
    it; what the dying connection may have swallowed is sent again (duplicates allowed)."""
    feeds.append(start_feed(sqlite_engine, writer, rsyslog.target("tls"), rsyslog.ca))

    async def produce() -> None:
        for i in range(200):
            await writer.record("api.request", tenant="acme", n=i)
            await asyncio.sleep(0.015)

    producing = asyncio.create_task(produce())
    await asyncio.sleep(1.0)
    await asyncio.to_thread(rsyslog.stop)
    await asyncio.sleep(0.7)
    await asyncio.to_thread(rsyslog.start)
    await producing
    await writer.checkpoint_now()
    entries, checkpoints = chain(sqlite_engine)

    def everything_arrived() -> bool:
        payloads = {m.payload for m in ours(rsyslog.received("tls"), sqlite_engine)}
        return payloads == set(entries) | set(checkpoints)

    await eventually(everything_arrived, timeout=30)
    assert feeds[0].status.sent >= len(entries) + len(checkpoints)


async def test_the_cursor_survives_a_restart_and_files_get_each_line_once(
    writer, sqlite_engine, tmp_path, feeds
):
    out = tmp_path / "siem" / "audit.jsonl"
    out.parent.mkdir()
    for i in range(30):
        await writer.record("api.request", tenant="acme", n=i)
    first = start_feed(sqlite_engine, writer, f"file://{out}")
    await eventually(lambda: first.status.delivered_seq == 30)
    first.stop()  # saves the cursor
    out.rename(out.with_suffix(".1"))  # rotated by the shipper: the next one starts a new file
    for i in range(20):
        await writer.record("api.request", tenant="beta", n=i)
    await writer.checkpoint_now()
    feeds.append(start_feed(sqlite_engine, writer, f"file://{out}"))
    await eventually(lambda: feeds[0].status.delivered_seq == 50 and feeds[0].status.backlog == 0)
    entries, checkpoints = chain(sqlite_engine)
    lines = out.with_suffix(".1").read_bytes().splitlines() + out.read_bytes().splitlines()
    assert sorted(lines) == sorted([*entries, *checkpoints])  # each exactly once
    assert [orjson.loads(line)["e"]["seq"] for line in lines if line in entries] == list(
        range(1, 51)
    )


async def test_a_receiver_that_stops_reading_never_slows_the_writer(writer, sqlite_engine, feeds):
    """With the feed blocked in a send, records commit as fast as without it, the backlog
    grows, and stopping takes about a second (the blocked send is cut)."""

    async def record_times(count: int) -> list[float]:
        times = []
        for i in range(count):
            started = time.perf_counter()
            await writer.record("api.request", tenant="acme", n=i, pad="x" * 2000)
            times.append(time.perf_counter() - started)
        return times

    alone = await record_times(300)
    for i in range(400):  # more than the kernel's socket buffers take (tcp_wmem: 4 MiB)
        await writer.record("api.request", tenant="acme", n=i, pad="y" * 16_000)
    stuck = TcpReceiver(stuck=True)
    try:
        feed = start_feed(sqlite_engine, writer, f"tcp://127.0.0.1:{stuck.port}")
        await eventually(lambda: feed._sending, timeout=10)  # blocked on the full socket
        await asyncio.sleep(0.5)
        beside = await record_times(300)
        assert feed._sending and feed.status.backlog > 0
        started = time.monotonic()
        await asyncio.to_thread(feed.stop)
        assert time.monotonic() - started < sender.ABORT_AFTER + 3
    finally:
        stuck.close()
    # The same writer, the same disk, one after the other: the median commit is not slower
    # beyond this machine's noise (a feed that blocked the writer would add seconds).
    assert statistics.median(beside) < statistics.median(alone) * 1.5 + 0.002, (alone, beside)


@pytest.mark.postgres
async def test_replicas_send_each_entry_once_and_a_standby_takes_over(
    pg_schema, tmp_path, monkeypatch
):
    """Two replicas with the feed on, both writing to one file: one sends, the other stands
    by; when the sender stops, the standby resumes from the shared cursor."""
    monkeypatch.setattr(sender, "STANDBY_RETRY", 0.3)
    engines = [pg_schema_engine(pg_schema) for _ in range(2)]
    writer = AuditWriter(engines[0], tmp_path / "audit-signing.key")
    await writer.start()
    out = tmp_path / "audit.jsonl"
    replicas = [start_feed(engine, writer, f"file://{out}") for engine in engines]
    try:
        for i in range(40):
            await writer.record("api.request", tenant="acme", n=i)
        await eventually(lambda: max(r.status.delivered_seq for r in replicas) == 40)
        roles = sorted(r.status.role for r in replicas)
        assert roles == ["sender", "standby"]
        active = next(r for r in replicas if r.status.role == "sender")
        standby = next(r for r in replicas if r is not active)
        await asyncio.to_thread(active.stop)
        for i in range(20):
            await writer.record("api.request", tenant="beta", n=i)
        await eventually(lambda: standby.status.delivered_seq == 60, timeout=10)
        assert standby.status.role == "sender"
        seqs = [orjson.loads(line)["e"]["seq"] for line in out.read_bytes().splitlines()
                if line.startswith(b'{"h"')]  # fmt: skip
        assert seqs == list(range(1, 61))  # each entry once, in order, across the hand-over
    finally:
        for replica in replicas:
            replica.stop()
        await writer.close()
        for engine in engines:
            engine.dispose()


def test_bad_targets_are_refused_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="SPARKPLANE_SIEM_TARGET 'http://siem' must start"):
        load_settings(None, siem_target="http://siem", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="SIEM_TLS_CERT and SPARKPLANE_SIEM_TLS_KEY go together"):
        load_settings(None, siem_tls_cert=tmp_path / "c.pem", data_dir=tmp_path)
    for bad in ("tls://", "tcp://siem:99999", "file://relative/path", "udp://siem/x"):
        with pytest.raises(TargetError):
            parse_target(bad)
    assert str(parse_target("tls://siem.site.lan")) == "tls://siem.site.lan:6514"
    assert str(parse_target("udp://10.0.0.9")) == "udp://10.0.0.9:514"
    with pytest.raises(FileNotFoundError):
        make_transport(parse_target("tls://siem"), TlsFiles(ca=tmp_path / "missing-ca.pem"))
