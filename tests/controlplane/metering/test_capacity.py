"""The validate report as the control plane reads it: latest report, table, and the plots."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from controlplane.metering.capacity import capacity_table, latest_report, load_report
from controlplane.metering.capacity_chart import capacity_charts
from installer.lifecycle.validate_report import build_report, report_stem, write_report

CURVE = [
    {"concurrency": 1, "gateway": {"aggregate_tok_s": 20.0, "per_stream_tok_s": 20.0,
                                   "ttft_ms": 90.0},
     "direct": {"aggregate_tok_s": 20.5, "per_stream_tok_s": 20.5, "ttft_ms": 80.0},
     "ratio": 0.976},
    {"concurrency": 8, "gateway": {"aggregate_tok_s": 61.0, "per_stream_tok_s": 7.9,
                                   "ttft_ms": 300.0},
     "direct": {"aggregate_tok_s": 62.0, "per_stream_tok_s": 8.0, "ttft_ms": 280.0},
     "ratio": 0.984},
]  # fmt: skip


def report_at(directory: Path, when: datetime, passed: bool = True) -> Path:
    stem = report_stem(when)
    checks = [{"name": "models listed", "passed": passed, "detail": "1 <model>", "seconds": 0.1}]
    verdicts = [{"name": "ratio_8", "value": 0.984, "reference": 0.98, "status": "pass",
                 "detail": "ok"}]  # fmt: skip
    report = build_report(
        now=when, profile="demo", model="m<1>", release="1.0.0", quick=True, max_num_seqs=8,
        checks=checks, verdicts=verdicts, curve=CURVE, html_name=f"{stem}.html",
    )  # fmt: skip
    json_path, _ = write_report(directory, stem, report)
    return json_path


def test_the_latest_readable_report_is_the_capacity(tmp_path: Path) -> None:
    assert latest_report(tmp_path / "none") is None
    report_at(tmp_path, datetime(2026, 12, 1, tzinfo=UTC))
    newest = report_at(tmp_path, datetime(2026, 12, 2, tzinfo=UTC))
    (tmp_path / "validate-20261203T000000Z.json").write_text("{half a report")
    report = latest_report(tmp_path)
    assert report is not None and report.path == newest
    assert report.peak_tok_s == 61.0
    assert capacity_table(report) == [
        ["1", "20.0", "20.0", "90", "20.5", "0.976"],
        ["8", "61.0", "7.9", "300", "62.0", "0.984"],
    ]


def test_the_page_is_self_contained_and_escapes_what_it_shows(tmp_path: Path) -> None:
    path = report_at(tmp_path, datetime(2026, 12, 1, tzinfo=UTC), passed=False)
    report = load_report(path)
    assert report.data["passed"] is False and report.html is not None
    page = report.html.read_text()
    assert page.count("<svg") == 2 and "FAIL" in page
    assert "m&lt;1&gt;" in page and "m<1>" not in page
    for external in ("<script", "<link", "src=", "url("):
        assert external not in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert json.loads(path.read_text())["schema"] == 1


def test_the_plots_draw_every_level(tmp_path: Path) -> None:
    report = load_report(report_at(tmp_path, datetime(2026, 12, 1, tzinfo=UTC)))
    rates, ttft = capacity_charts(report.rows)
    assert rates.count("<polyline") == 3 and ttft.count("<polyline") == 1
    assert (
        rates.count("<circle") == 6
        and "61: " not in rates
        and "total, through Sparkplane: 61" in rates
    )
