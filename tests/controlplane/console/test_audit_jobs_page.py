"""The dashboard and /metrics show the retention schedule and the SIEM feed's backlog."""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controlplane.console.web import format_time
from tests.controlplane.console.client import ConsoleClient
from tests.controlplane.console.server import start_console_server
from tests.controlplane.harness import free_port, metrics_token_file, scrape


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, flags=re.M)
    assert match, f"{name} not on /metrics"
    return float(match.group(1))


def test_dashboard_shows_last_and_next_prune_and_the_feed_backlog(tmp_path: Path) -> None:
    dead = f"tcp://127.0.0.1:{free_port()}"  # nothing listens: the receiver is down
    server = start_console_server(
        tmp_path / "data", siem_target=dead, metrics_token_file=metrics_token_file(tmp_path)
    )
    try:
        name, password = server.add_user("auditor")
        client = ConsoleClient(server.url)
        assert client.signin(name, password).status_code == 303
        page = client.get("/").text
        assert "not run yet" in page and "not connected" in page and dead in page

        jobs = server.app.state.audit_jobs
        jobs.retention.clock = lambda: datetime(2031, 5, 4, 3, 0, tzinfo=UTC)  # controlled
        run = jobs.retention.tick()
        assert run is not None and run.error is None

        deadline = time.monotonic() + 10
        while jobs.feed.status.backlog == 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # the feed notices the sign-in's entry
        scraped = scrape(server.url)
        backlog = metric(scraped, "sparkplane_siem_backlog_entries")
        assert backlog >= 1 and metric(scraped, "sparkplane_siem_connected") == 0
        assert metric(scraped, "sparkplane_siem_sender") == 1
        assert metric(scraped, "sparkplane_audit_retention_last_run_timestamp_seconds") == (
            datetime(2031, 5, 4, 3, 0, tzinfo=UTC).timestamp()
        )

        page = html.unescape(client.get("/").text)
        retention = page[page.index('id="retention"') :][:1200]
        assert f"last prune: {format_time(run.finished)}" in retention
        next_prune = format_time(datetime(2031, 5, 4, 3, 0, tzinfo=UTC) + timedelta(days=1))
        assert f"next prune: {next_prune}" in retention
        feed = page[page.index('id="siem-feed"') :][:1200]
        assert re.search(r"backlog [\d,]+ entries", feed) and "cannot connect" in feed
        client.close()
    finally:
        server.stop()
