import asyncio

import pytest
from sqlalchemy import Connection, func, select, text
from sqlalchemy.exc import DatabaseError, OperationalError

from controlplane.audit import AuditUnavailable, AuditWriter
from controlplane.audit.models import AuditCheckpoint, AuditEntry
from controlplane.audit.verify import verify_live
from tests.controlplane.audit.conftest import sqlite_store


async def test_concurrent_records_get_contiguous_durable_seqs(writer, sqlite_engine, tmp_path):
    seqs = await asyncio.gather(
        *(writer.record("api.request", tenant="acme", n=i) for i in range(500))
    )
    assert sorted(seqs) == list(range(1, 501))
    # A separate engine (a fresh connection) sees every acknowledged entry.
    other = sqlite_store(tmp_path)
    with other.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AuditEntry)).scalar() == 500
    other.dispose()
    report = verify_live(sqlite_engine, [tmp_path / "audit-signing.pub"])
    assert report.valid and report.entries_valid == 500, report.as_dict()


async def test_group_commit_batches_many_entries_per_transaction(writer, sqlite_engine):
    await asyncio.gather(*(writer.record("api.request", n=i) for i in range(1000)))
    with sqlite_engine.connect() as conn:
        distinct_times = conn.execute(select(func.count(func.distinct(AuditEntry.time)))).scalar()
    assert distinct_times < 200  # one timestamp per transaction: far fewer than 1000


async def test_checkpoints_every_n_entries_and_after_t_seconds(sqlite_engine, tmp_path):
    audit = AuditWriter(
        sqlite_engine, tmp_path / "k.key", checkpoint_every=5, checkpoint_seconds=0.3
    )
    await audit.start()
    for i in range(12):
        await audit.record("api.request", n=i)  # one per transaction
    with sqlite_engine.connect() as conn:
        sizes = conn.execute(select(AuditCheckpoint.size).order_by(AuditCheckpoint.size)).scalars()
        assert list(sizes) == [1, 6, 11]
    await asyncio.sleep(0.8)  # idle: the timer signs the tail
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(func.max(AuditCheckpoint.size))).scalar() == 12
    await audit.close()


async def test_two_writers_keep_the_cadence_despite_each_remembering_its_checkpoint(
    sqlite_engine, tmp_path
):
    # Each writer remembers the last checkpoint it saw instead of querying on every commit;
    # a checkpoint written by the other writer (another replica) must still count.
    key = tmp_path / "k.key"
    first, second = (AuditWriter(sqlite_engine, key, checkpoint_every=4) for _ in range(2))
    await first.start()
    await second.start()
    for n in range(20):
        await (first if n % 3 else second).record("api.request", n=n)  # one per transaction
    with sqlite_engine.connect() as conn:
        sizes = conn.execute(select(AuditCheckpoint.size).order_by(AuditCheckpoint.size)).scalars()
        assert list(sizes) == [1, 5, 9, 13, 17]
    await first.close()
    await second.close()
    report = verify_live(sqlite_engine, [tmp_path / "k.pub"])
    assert report.valid and report.entries_valid == 20, report.as_dict()


async def test_close_signs_a_final_checkpoint_and_refuses_new_records(sqlite_engine, tmp_path):
    audit = AuditWriter(sqlite_engine, tmp_path / "k.key", checkpoint_every=1000)
    await audit.start()
    await asyncio.gather(*(audit.record("api.request", n=i) for i in range(3)))
    await audit.close()
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(func.max(AuditCheckpoint.size))).scalar() == 3
    assert not audit.healthy
    with pytest.raises(AuditUnavailable, match="not running"):
        await audit.record("api.request")


async def test_bad_input_is_refused_before_it_reaches_the_chain(writer):
    with pytest.raises(ValueError, match="lowercase dotted"):
        await writer.record("Bad Kind")
    with pytest.raises(TypeError, match="tenant"):
        await writer.record("api.request", tenant=5)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        await writer.record("api.request", blob=object())
    assert await writer.record("api.request") == 1


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM audit_entries WHERE seq = 1",
        "UPDATE audit_entries SET kind = 'x' WHERE seq = 1",
        "UPDATE audit_entries SET data = NULL WHERE seq = 1",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_checkpoints SET note = 'x'",
    ],
)
async def test_sqlite_guards_refuse_update_and_delete(writer, sqlite_engine, statement):
    await writer.record("api.request", tenant="acme")
    await writer.checkpoint_now()
    with sqlite_engine.connect() as conn, pytest.raises(DatabaseError, match="append-only"):
        conn.execute(text(statement))


async def test_key_rotation_is_recorded_and_both_keys_verify(sqlite_engine, tmp_path):
    key = tmp_path / "audit-signing.key"
    audit = AuditWriter(sqlite_engine, key, checkpoint_every=3)
    await audit.start()
    first_pub = key.with_suffix(".pub").read_bytes()
    await asyncio.gather(*(audit.record("api.request", n=i) for i in range(7)))
    old_id = audit.signer.key_id.hex()
    new_id = await audit.rotate_key()
    assert new_id != old_id and key.with_suffix(".pub").read_bytes() != first_pub
    await asyncio.gather(*(audit.record("api.request", n=i) for i in range(7)))
    await audit.close()
    with sqlite_engine.connect() as conn:
        key_ids = set(conn.execute(select(AuditCheckpoint.key_id)).scalars())
        kinds = list(
            conn.execute(select(AuditEntry.kind).where(AuditEntry.kind.like("audit.%"))).scalars()
        )
    assert key_ids == {old_id, new_id} and kinds == ["audit.key_rotated", "audit.key_activated"]
    (tmp_path / "old.pub").write_bytes(first_pub)
    for trusted in ("old.pub", "audit-signing.pub"):  # either key leads to the other
        report = verify_live(sqlite_engine, [tmp_path / trusted])
        assert report.valid and report.checkpoints_valid == report.checkpoints, report.as_dict()


async def test_cancelled_caller_does_not_break_the_writer(writer):
    task = asyncio.ensure_future(writer.record("api.request", n=1))
    await asyncio.sleep(0)
    task.cancel()
    assert await writer.record("api.request", n=2) in (1, 2)
    assert writer.healthy


async def test_running_writer_follows_a_rotation_made_by_another_process(sqlite_engine, tmp_path):
    key = tmp_path / "audit-signing.key"
    server = AuditWriter(sqlite_engine, key, checkpoint_every=1000)
    await server.start()
    original = key.with_suffix(".pub").read_bytes()
    await server.record("api.request", n=1)
    cli = AuditWriter(sqlite_engine, key)  # what `sparkplane audit rotate-key` runs
    await cli.start()
    new_id = await cli.rotate_key()
    await cli.close()
    await server.record("api.request", n=2)
    await server.checkpoint_now()
    with sqlite_engine.connect() as conn:
        newest = conn.execute(
            select(AuditCheckpoint.key_id).order_by(AuditCheckpoint.size.desc())
        ).scalar()
    assert newest == new_id
    await server.close()
    (tmp_path / "original.pub").write_bytes(original)
    assert verify_live(sqlite_engine, [tmp_path / "original.pub"]).valid


async def test_a_full_queue_is_refused_instead_of_growing(sqlite_engine, tmp_path):
    audit = AuditWriter(sqlite_engine, tmp_path / "k.key", max_pending=10)
    await audit.start()
    blocker = sqlite_engine.connect()
    blocker.exec_driver_sql("BEGIN IMMEDIATE")  # another writer holds the database: we wait
    first = asyncio.ensure_future(audit.record("api.request", n=0))
    await asyncio.sleep(0.3)  # the writer thread has taken it and waits for the lock
    queued = [asyncio.ensure_future(audit.record("api.request", n=i)) for i in range(1, 11)]
    await asyncio.sleep(0.05)
    with pytest.raises(AuditUnavailable, match="queue full"):
        await audit.record("api.request", n=99)
    blocker.rollback()
    blocker.close()
    assert sorted(await asyncio.gather(first, *queued)) == list(range(1, 12))
    await audit.close()


async def test_a_lazy_entry_waits_for_company_or_its_deadline(writer, sqlite_engine, monkeypatch):
    monkeypatch.setattr("controlplane.audit.writer.LAZY_COMMIT_DELAY", 30.0)
    lazy = writer.enqueue("api.request", urgent=False, n=1)
    await asyncio.sleep(0.3)
    assert not lazy.done()  # no commit, no fsync of its own
    # An urgent entry behind it commits both, in one transaction (one timestamp).
    assert await writer.record("api.completion", n=1) == 2
    assert await lazy == 1
    # Someone waiting for a lazy entry (an error reply) asks for it at once.
    lazy = writer.enqueue("api.request", urgent=False, n=2)
    await asyncio.sleep(0.1)
    writer.expedite()
    assert await asyncio.wait_for(lazy, 5) == 3
    with sqlite_engine.connect() as conn:
        times = conn.execute(select(AuditEntry.time).order_by(AuditEntry.seq)).scalars().all()
    assert times[0] == times[1] != times[2]

    # Alone, it commits once its deadline has passed.
    monkeypatch.setattr("controlplane.audit.writer.LAZY_COMMIT_DELAY", 0.2)
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(writer.enqueue("api.request", urgent=False, n=3), 5) == 4
    assert asyncio.get_running_loop().time() - started >= 0.2


async def test_kept_entries_of_a_commit_that_lost_its_answer_are_not_appended_twice(
    sqlite_engine, tmp_path, monkeypatch
):
    """A connection lost during COMMIT: the transaction may have committed. Kept entries are
    retried after recovery, so the writer must first look whether they are in the chain."""
    audit = AuditWriter(sqlite_engine, tmp_path / "k.key")
    await audit.start()
    open_connection = AuditWriter._connection
    answers_lost = []

    def connection_that_loses_one_commit_answer(self: AuditWriter) -> Connection:
        conn = open_connection(self)
        if not answers_lost:
            commit = conn.commit

            def commit_then_lose_the_answer() -> None:
                commit()  # really committed...
                answers_lost.append(conn)
                raise OperationalError("COMMIT", None, Exception("server closed the connection"))

            conn.commit = commit_then_lose_the_answer  # type: ignore[method-assign]
        return conn

    monkeypatch.setattr(AuditWriter, "_connection", connection_that_loses_one_commit_answer)
    kept = [audit.enqueue("api.completion", keep=True, n=n) for n in range(3)]
    assert await asyncio.wait_for(asyncio.gather(*kept), 10) == [1, 2, 3]
    assert answers_lost and audit.healthy
    assert await audit.record("api.request", n=3) == 4  # the chain goes on after them
    await audit.close()
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AuditEntry)).scalar() == 4
    report = verify_live(sqlite_engine, [tmp_path / "k.pub"])
    assert report.valid and report.entries_valid == 4, report.as_dict()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_raw_appends_store_rows_exactly_as_sqlalchemy_does(backend, request):
    """The writer's inserts bypass SQLAlchemy's statement layer: same stored values anyway."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from controlplane.audit import store

    engine = request.getfixturevalue("sqlite_engine" if backend == "sqlite" else "pg_engine")
    moment = datetime(2026, 11, 27, 3, 4, 5, 678901, tzinfo=UTC)
    with engine.connect() as conn:
        store.lock_chain(conn)
        (raw,) = store.append_entries(
            conn, store.read_head(conn), [("api.request", "t", b"{}")], moment
        )
        row = {"seq": 2, "time": moment, "kind": "x", "tenant": None, "envelope": b"e",
               "data": None, "hash": b"h"}  # fmt: skip
        conn.execute(insert(AuditEntry).values(**row))
        conn.commit()
        stored = conn.execute(
            text("SELECT seq, CAST(time AS TEXT), envelope, hash FROM audit_entries ORDER BY seq")
        ).all()
        assert store.read_head(conn) == (2, b"h")
    assert stored[0][1] == stored[1][1]  # the time column, as the database holds it
    assert (stored[0][0], bytes(stored[0][2]), bytes(stored[0][3])) == (1, raw.envelope, raw.hash)
