"""docs/controlplane.md says only what the code does for retention and the SIEM feed: its
settings, defaults, syslog fields, timings and metrics are read from the page and checked
against the code."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from controlplane.audit import retention_job
from controlplane.audit.feed import messages, sender, transports
from controlplane.audit.feed.messages import checkpoint_item, entry_item, syslog_message
from controlplane.audit.feed.sender import FeedStatus
from controlplane.audit.jobs import AuditJobs, _JobMetrics
from controlplane.audit.retention_job import RetentionRun
from controlplane.core.config import Settings
from controlplane.tenancy.models import TenantCreate

DOC = (Path(__file__).resolve().parents[3] / "docs" / "controlplane.md").read_text()
SETTINGS = ("AUDIT_RETENTION_INTERVAL_HOURS", "AUDIT_RETENTION_DAYS", "SIEM_TARGET",
            "SIEM_TLS_CA", "SIEM_TLS_CERT", "SIEM_TLS_KEY")  # fmt: skip


def section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    return DOC[start : DOC.index("\n## ", start + 1)]


def row(text: str, label: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(f"| {label} |")]
    return line


def seconds(text: str) -> list[float]:
    """Every duration in `text`, in seconds ("0.5 s", "2 seconds", "1 hour")."""
    found = re.findall(r"(\d+(?:\.\d+)?) (s|seconds?|hours?)\b", text)
    return [float(n) * (3600 if unit.startswith("hour") else 1) for n, unit in found]


def test_the_settings_table_gives_the_codes_defaults() -> None:
    table = section("Running it")
    for name in SETTINGS:
        line = next(line for line in table.splitlines() if f"`SPARKPLANE_{name}`" in line)
        documented = line.split("|")[2].strip()
        default = Settings.model_fields[name.lower()].default
        if default in (None, ""):
            assert documented.startswith("unset"), (name, documented)
        else:
            assert documented == f"`{default:g}`", (name, documented, default)


def test_the_syslog_fields_are_what_the_feed_sends() -> None:
    text = section("SIEM feed")
    pri = row(text, "PRI")
    assert f"facility {messages.FACILITY_LOG_AUDIT} " in pri
    notice = set(re.findall(r"`(\w+)\.\*`", pri))
    assert {prefix.rstrip(".") for prefix in messages._NOTICE_PREFIXES} == notice
    moment = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)
    envelope = b'{"data":"' + b"0" * 64 + b'","kind":"api.request","seq":42}'
    examples = {  # kind -> the severity the table promises
        "console.signin_failed": 4, "admin.tenant_create": 5, "installer.install": 5,
        "audit.export": 5, "console.signin": 5, "api.request": 6,
    }  # fmt: skip
    for kind, severity in examples.items():
        assert f"{severity} (" in pri
        item = entry_item(42, moment, kind, "acme", envelope, b"{}", bytes(32))
        message = syslog_message(item, "box")
        assert message.startswith(f"<{messages.FACILITY_LOG_AUDIT * 8 + severity}>1 ".encode())
        assert f" box sparkplane - {kind} ".encode() in message
    entry_sd = re.findall(r'(\w+)="…"', row(text, "structured data, entry"))
    sent = syslog_message(entry_item(42, moment, "api.request", "acme", envelope, b"{}",
                                     bytes(32)), "box")  # fmt: skip
    assert entry_sd == re.findall(r'(\w+)="', sent.split(b"] ")[0].decode())
    checkpoint_sd = re.findall(r'(\w+)="…"', row(text, "structured data, checkpoint"))
    sent = syslog_message(checkpoint_item(42, bytes(32), "note\n", moment), "box")
    assert checkpoint_sd == re.findall(r'(\w+)="', sent.split(b"] ")[0].decode())
    assert f"`{messages.CHECKPOINT_MSGID}`" in row(text, "MSGID")


def test_the_documented_timings_are_the_codes() -> None:
    text = section("SIEM feed")
    assert seconds(row(text, "wakes up")) == [sender.COALESCE, sender.POLL]
    assert f"up to {sender.BATCH} entries" in row(text, "batch")
    assert seconds(row(text, "batch")) == [sender.CATCH_UP_PAUSE]
    assert seconds(row(text, "reconnect")) == [sender.BACKOFF_MIN, sender.BACKOFF_MAX]
    assert seconds(row(text, "a receiver that stops reading")) == [transports.SEND_TIMEOUT]
    prose = " ".join(text.split())
    assert f"stayed up {sender.SETTLE:g} seconds" in prose
    assert f"no acknowledgement for {transports.USER_TIMEOUT_MS // 1000} s" in prose
    assert f"waits (up to {transports.CLOSE_TIMEOUT:g} s)" in prose
    assert f"every {sender.STANDBY_RETRY:g} s" in prose
    retention = section("Audit retention")
    assert seconds(row(retention, "first run after a start")) == [retention_job.STARTUP_DELAY]
    assert seconds(row(retention, "next run")) == [retention_job.RETRY_AFTER.total_seconds()]
    prose = " ".join(retention.split())
    default_days = Settings.model_fields["audit_retention_days"].default
    assert f"`SPARKPLANE_AUDIT_RETENTION_DAYS`, {default_days:d}," in prose
    tenant_days = TenantCreate.model_fields["retention_days"].default
    assert f"(`retention_days`, {tenant_days} unless set)" in prose


def test_every_metric_is_documented_and_every_documented_one_exists() -> None:
    status = FeedStatus("tls://siem:6514", role="sender", connected=True, head_seq=9)
    moment = datetime(2026, 1, 1, tzinfo=UTC)

    class Job:
        last = RetentionRun(moment, moment + timedelta(seconds=1), 0, 0, 0, None)

    class Feed:
        pass

    feed = Feed()
    feed.status = status  # type: ignore[attr-defined]
    registry = CollectorRegistry()
    registry.register(_JobMetrics(AuditJobs(Job(), feed)))  # type: ignore[arg-type]
    exposed = set(re.findall(r"^(sparkplane_\w+?)(?:_total)? ", generate_latest(registry).decode(),
                             flags=re.M))  # fmt: skip
    documented = set()
    for title in ("SIEM feed", "Audit retention"):
        names = re.findall(r"`(sparkplane_(?:siem|audit_retention)_\w+)`", section(title))
        documented |= {name.removesuffix("_total") for name in names}
    assert exposed == documented
