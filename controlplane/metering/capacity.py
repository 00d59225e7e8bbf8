"""The box's measured capacity: the latest `sparkplane validate` report, read by the control plane.

`sparkplane validate` (installer side) writes `ROOT/var/lib/sparkplane/reports/validate-*.json`;
this module only reads them: the console's System page and dashboard, and `sparkplane capacity`.
Report shape (schema 1): `created`, `profile`, `model`, `quick`, `passed`, `checks` (name,
passed, detail, seconds), `figures` (name, value, reference, status, detail), `curve` (one entry
per concurrency: `gateway` and `direct`, each `aggregate_tok_s`, `per_stream_tok_s`, `ttft_ms`,
and their `ratio`), `html` (the page's file name).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPORT_GLOB = "validate-*.json"
REPORT_SCHEMA = 1


@dataclass(frozen=True)
class CapacityRow:
    concurrency: int
    aggregate_tok_s: float
    per_stream_tok_s: float
    ttft_ms: float
    direct_aggregate_tok_s: float
    ratio: float


@dataclass(frozen=True)
class CapacityReport:
    path: Path
    data: dict[str, Any]

    @property
    def rows(self) -> list[CapacityRow]:
        return [
            CapacityRow(
                int(point["concurrency"]),
                float(point["gateway"]["aggregate_tok_s"]),
                float(point["gateway"]["per_stream_tok_s"]),
                float(point["gateway"]["ttft_ms"]),
                float(point["direct"]["aggregate_tok_s"]),
                float(point["ratio"]),
            )
            for point in self.data.get("curve", [])
        ]

    @property
    def peak_tok_s(self) -> float:
        """The most tokens per second measured through the control plane: the box's capacity."""
        return max((row.aggregate_tok_s for row in self.rows), default=0.0)

    @property
    def html(self) -> Path | None:
        name = self.data.get("html")
        return self.path.parent / str(name) if name else None


def report_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_report(path: Path) -> CapacityReport:
    """One report; ValueError when it is not a validate report this version reads."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        raise ValueError(f"{path}: not a schema-{REPORT_SCHEMA} validate report")
    report = CapacityReport(path, data)
    report.rows  # noqa: B018 - parse the curve now: a malformed one is refused here
    return report


def latest_report(reports_dir: Path) -> CapacityReport | None:
    """The newest readable report (names sort by time), or None."""
    if not reports_dir.is_dir():
        return None
    for path in sorted(reports_dir.glob(REPORT_GLOB), reverse=True):
        try:
            return load_report(path)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a half-written or foreign file: look at the one before
    return None


def capacity_table(report: CapacityReport) -> list[list[str]]:
    """The rows `sparkplane capacity` prints (and the console shows), as text."""
    return [
        [str(row.concurrency), f"{row.aggregate_tok_s:.1f}", f"{row.per_stream_tok_s:.1f}",
         f"{row.ttft_ms:.0f}", f"{row.direct_aggregate_tok_s:.1f}", f"{row.ratio:.3f}"]
        for row in report.rows
    ]  # fmt: skip


CAPACITY_COLUMNS = [
    "streams", "tok/s total", "tok/s per stream", "TTFT ms", "direct tok/s total", "ratio",
]  # fmt: skip
