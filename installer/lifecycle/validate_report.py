"""`sparkplane validate`'s report: a JSON document and a self-contained HTML page beside it.

Both go to `ROOT/var/lib/sparkplane/reports/validate-<UTC time>.{json,html}` (the shape is in
`controlplane/metering/capacity.py`, which reads them back). The page carries its plots as
inline SVG and its style inline: no script, no external asset, so it opens on an air-gapped
laptop as it does on the box.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from controlplane.metering.capacity import REPORT_SCHEMA, CapacityReport
from controlplane.metering.capacity_chart import CURVE_CSS, capacity_charts

PAGE_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 960px; color: #1d2330; }
table { border-collapse: collapse; width: 100%; margin: 0.5rem 0 1.5rem; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e6e9ef; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #1b7f3b; font-weight: 600; } .fail { color: #b00020; font-weight: 600; }
.warn { color: #a86400; font-weight: 600; } .info { color: #5d6778; }
"""


def report_stem(now: datetime) -> str:
    return "validate-" + now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def build_report(
    *, now: datetime, profile: str | None, model: str, release: str | None, quick: bool,
    max_num_seqs: int, checks: list[dict[str, Any]], verdicts: list[dict[str, Any]],
    curve: list[dict[str, Any]], html_name: str,
) -> dict[str, Any]:  # fmt: skip
    return {
        "schema": REPORT_SCHEMA,
        "created": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "profile": profile,
        "model": model,
        "release": release,
        "quick": quick,
        "max_num_seqs": max_num_seqs,
        "passed": all(check["passed"] for check in checks),
        "warnings": sum(1 for v in verdicts if v["status"] == "warn"),
        "checks": checks,
        "figures": verdicts,
        "curve": curve,
        "html": html_name,
    }


def _row(cells: list[str], classes: list[str] | None = None) -> str:
    classes = classes or [""] * len(cells)
    return (
        "<tr>"
        + "".join(f'<td class="{c}">{v}</td>' for v, c in zip(cells, classes, strict=True))
        + "</tr>"
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def render_html(report: dict[str, Any], rows_report: CapacityReport) -> str:
    verdict = "pass" if report["passed"] else "fail"
    checks = "".join(
        _row([escape(c["name"]), "pass" if c["passed"] else "FAIL", escape(c["detail"])],
             ["", "pass" if c["passed"] else "fail", ""])
        for c in report["checks"]
    )  # fmt: skip
    figures = "".join(
        _row([escape(f["name"]), f"{f['value']:g}", _number(f["reference"]), f["status"],
              escape(f["detail"])], ["", "num", "num", f["status"], ""])
        for f in report["figures"]
    )  # fmt: skip
    curve = "".join(
        _row([str(r.concurrency), f"{r.aggregate_tok_s:.1f}", f"{r.per_stream_tok_s:.1f}",
              f"{r.ttft_ms:.0f}", f"{r.direct_aggregate_tok_s:.1f}", f"{r.ratio:.3f}"], ["num"] * 6)
        for r in rows_report.rows
    )  # fmt: skip
    plots = "".join(capacity_charts(rows_report.rows))
    facts = (
        f"profile {escape(str(report['profile']))}, release {escape(str(report['release']))}, "
        f"max-num-seqs {report['max_num_seqs']}, {'quick' if report['quick'] else 'full'} run, "
        f"{report['warnings']} figure(s) below reference"
    )
    title = f"Sparkplane validate: {escape(str(report['model']))}, {report['created']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{PAGE_CSS}{CURVE_CSS}</style></head><body>
<h1>{title}</h1>
<p>Result: <span class="{verdict}">{verdict.upper()}</span>; {facts}.</p>
<h2>Functional checks</h2>
<table><tr><th>check</th><th>result</th><th>detail</th></tr>{checks}</table>
<h2>Capacity</h2>
{plots}
<table><tr><th>streams</th><th>tok/s total</th><th>tok/s per stream</th><th>TTFT ms</th>
<th>engine alone tok/s</th><th>ratio</th></tr>{curve}</table>
<h2>Figures against the profile's reference</h2>
<table><tr><th>figure</th><th>value</th><th>reference</th><th>status</th><th>detail</th></tr>{figures}</table>
</body></html>
"""


def write_report(directory: Path, stem: str, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write the page, then the JSON (renamed into place last: readers see whole reports)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / f"{stem}.json", directory / f"{stem}.html"
    html_path.write_text(render_html(report, CapacityReport(json_path, report)), encoding="utf-8")
    partial = directory / f".{stem}.json.tmp"
    partial.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, json_path)
    return json_path, html_path
