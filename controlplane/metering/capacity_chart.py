"""The capacity curves as inline SVG: tok/s and TTFT against concurrent streams.

Drawn on the server, one string of SVG with classes for colours (the console's CSP forbids
inline styles; `CURVE_CSS` is the same palette for the report's self-contained HTML page).
Shared by the console's System page and `sparkplane validate`'s report, so both show one plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from controlplane.metering.capacity import CapacityRow

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 12, 36

CURVE_CSS = """
svg.chart { width: 100%; height: auto; background: #fff; }
svg.chart .axis { stroke: #8a94a6; stroke-width: 1; }
svg.chart .grid { stroke: #e6e9ef; stroke-width: 1; }
svg.chart text { font-size: 11px; fill: #5d6778; }
svg.chart polyline.curve { fill: none; stroke-width: 2; }
svg.chart .s0 { stroke: #1f5fbf; fill: #1f5fbf; }
svg.chart .s1 { stroke: #8fb3e8; fill: #8fb3e8; }
svg.chart .s2 { stroke: #c2185b; fill: #c2185b; }
svg.chart .s3 { stroke: #2e7d32; fill: #2e7d32; }
svg.chart .s4 { stroke: #ef6c00; fill: #ef6c00; }
svg.chart .s5 { stroke: #6a1b9a; fill: #6a1b9a; }
"""
SERIES_CLASSES = 6  # s0..s5 above; further series reuse them in turn


def _ceiling(value: float) -> float:
    """A readable axis maximum: 1, 2 or 5 times a power of ten, at or above `value`."""
    if value <= 0:
        return 1.0
    scale = 1.0
    while scale * 10 <= value:
        scale *= 10
    while scale > value:
        scale /= 10
    return next(step * scale for step in (1, 2, 5, 10) if step * scale >= value)


def curve_svg(
    title: str, xs: Sequence[int | str], series: Sequence[tuple[str, Sequence[float]]], axis: str
) -> str:
    """Lines of `series` (label, one value per x) over the labels `xs`, named `axis` below."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _ceiling(max((v for _, values in series for v in values), default=0.0))
    span = max(len(xs) - 1, 1)

    def point(index: int, value: float) -> tuple[float, float]:
        return LEFT + plot_w * index / span, TOP + plot_h - plot_h * value / top

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in range(5):
        y = TOP + plot_h - plot_h * tick / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{top * tick / 4:g}</text>'
        )
    for index, level in enumerate(xs):
        px, _ = point(index, 0)
        parts.append(f'<text x="{px:.1f}" y="{HEIGHT - 20}" text-anchor="middle">{level}</text>')
    parts.append(
        f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle">'
        f"{escape(axis)}</text>"
    )
    for index, (label, values) in enumerate(series):
        number = index % SERIES_CLASSES
        points = [point(i, v) for i, v in enumerate(values)]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        parts.append(f'<polyline class="curve s{number}" points="{path}"/>')
        for (px, py), value in zip(points, values, strict=True):
            parts.append(f'<circle class="s{number}" cx="{px:.1f}" cy="{py:.1f}" r="3">'
                         f"<title>{escape(label)}: {value:g}</title></circle>")  # fmt: skip
        ly = TOP + 14 + 18 * index
        lx = LEFT + plot_w + 12
        parts.append(f'<rect class="s{number}" x="{lx}" y="{ly - 8}" width="10" height="10"/>')
        parts.append(f'<text x="{LEFT + plot_w + 26}" y="{ly + 1}">{escape(label)}</text>')
    base = TOP + plot_h
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{base}" y2="{base}"/>')
    parts.append("</svg>")
    return "".join(parts)


def capacity_charts(rows: Sequence[CapacityRow]) -> list[str]:
    """The report's two plots: tok/s against concurrency, TTFT against concurrency."""
    xs = [row.concurrency for row in rows]
    rates = curve_svg(
        "Tokens per second against concurrency", xs,
        [("total, through Sparkplane", [r.aggregate_tok_s for r in rows]),
         ("total, engine alone", [r.direct_aggregate_tok_s for r in rows]),
         ("per stream", [r.per_stream_tok_s for r in rows])],
        "concurrent streams (tok/s)",
    )  # fmt: skip
    ttft = curve_svg(
        "Time to first token", xs, [("TTFT ms", [r.ttft_ms for r in rows])],
        "concurrent streams (ms)",
    )  # fmt: skip
    return [rates, ttft]
