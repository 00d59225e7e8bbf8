"""The installer's events.jsonl (controlplane/appliance/events.py) imported into a real chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.appliance.events import record_event
from controlplane.appliance.layout import Layout
from controlplane.audit.guards import install_guards
from controlplane.audit.installer_events import InstallerEventError, import_events, parse_events
from controlplane.audit.verify import verify_live
from controlplane.audit.writer import AuditWriter
from controlplane.core.db import init_db, make_engine


@pytest.fixture
def chain(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    init_db(engine)
    install_guards(engine)
    yield engine, tmp_path / "audit-signing.key"
    engine.dispose()


async def test_installer_events_enter_the_chain_once(chain, tmp_path: Path) -> None:
    engine, key = chain
    layout = Layout.at(tmp_path / "root")
    record_event(layout, "install", phase="started", version="1.0.0", profile="demo")
    record_event(layout, "install", phase="succeeded", version="1.0.0", changed=17)
    writer = AuditWriter(engine, key)
    await writer.start()
    try:
        first = await import_events(engine, writer, layout.events)
        record_event(layout, "rollback", phase="succeeded", version="0.9.0", previous="1.0.0")
        second = await import_events(engine, writer, layout.events)
    finally:
        await writer.close()
    assert (first.imported, first.skipped) == (2, 0)
    assert (second.imported, second.skipped) == (1, 2)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("select kind, data from audit_entries order by seq").all()
    assert [kind for kind, _ in rows] == ["installer.install"] * 2 + ["installer.rollback"]
    last = json.loads(rows[-1][1])
    assert {"phase": "succeeded", "version": "0.9.0", "previous": "1.0.0"}.items() <= last.items()
    assert "kind" not in last and "event_id" in last
    assert verify_live(engine, [key.with_suffix(".pub")]).valid


@pytest.mark.parametrize(
    "line",
    [
        '{"kind": "install", "version": "1"}',  # not installer.<action>
        '{"kind": "installer.install", "action": "upgrade"}',  # contradicting
        '{"kind": "installer.Install!"}',  # not a kind word
        '{"version": "1"}',  # neither
        '["installer.install"]',
    ],
)
def test_an_unusable_event_line_is_named(tmp_path: Path, line: str) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"action": "install", "time": "t"}\n' + line + "\n")
    with pytest.raises(InstallerEventError, match=r"events.jsonl:2: needs a 'kind'"):
        parse_events(events)


def test_the_short_form_and_the_installer_form_agree(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"action": "upgrade", "version": "2"}\n'
        '{"kind": "installer.upgrade", "action": "upgrade", "version": "2"}\n'
    )
    assert [event["version"] for _, event in parse_events(events)] == ["2", "2"]
