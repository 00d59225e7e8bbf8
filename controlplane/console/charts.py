"""Server-rendered SVG charts: no chart library, no JavaScript, nothing loaded from outside.

Colours come from classes in console.css (the CSP forbids inline styles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

from markupsafe import Markup, escape

from controlplane.metering.capacity_chart import curve_svg

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 28


@dataclass(frozen=True)
class DayTokens:
    day: date
    prompt_tokens: int
    completion_tokens: int
    requests: int = 0


def nice_ceiling(value: float) -> float:
    """The smallest 1/2/5 x 10^n at or above `value` (a readable axis maximum)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        candidate = step * 10.0**exponent
        if candidate >= value:
            return candidate
    return 10.0 ** (exponent + 1)


def short_number(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:g}"


def fill_days(rows: list[DayTokens], last_day: date, days: int) -> list[DayTokens]:
    """One entry per day of the window, zeros where nothing was used."""
    by_day = {row.day: row for row in rows}
    first = last_day - timedelta(days=days - 1)
    return [
        by_day.get(first + timedelta(days=offset), DayTokens(first + timedelta(days=offset), 0, 0))
        for offset in range(days)
    ]


def token_bar_chart(rows: list[DayTokens], title: str) -> Markup:
    """Stacked bars per day: prompt tokens under completion tokens."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max((r.prompt_tokens + r.completion_tokens for r in rows), default=0)
    top = max(nice_ceiling(peak), 4.0)  # whole-number ticks even for an empty chart
    slot = plot_w / max(len(rows), 1)
    bar_w = max(slot * 0.7, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in range(5):
        value = top * tick / 4
        y = TOP + plot_h - plot_h * tick / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{short_number(value)}</text>'
        )
    label_every = max(1, math.ceil(len(rows) / 8))
    for index, row in enumerate(rows):
        x = LEFT + index * slot + (slot - bar_w) / 2
        prompt_h = plot_h * row.prompt_tokens / top
        completion_h = plot_h * row.completion_tokens / top
        base = TOP + plot_h
        tip = (
            f"{row.day.isoformat()}: {row.requests:,} requests, {row.prompt_tokens:,} prompt + "
            f"{row.completion_tokens:,} completion tokens"
        )
        parts.append(f"<g><title>{escape(tip)}</title>")
        parts.append(
            f'<rect class="bar-prompt" x="{x:.1f}" y="{base - prompt_h:.1f}" '
            f'width="{bar_w:.1f}" height="{prompt_h:.1f}"/>'
        )
        parts.append(
            f'<rect class="bar-completion" x="{x:.1f}" y="{base - prompt_h - completion_h:.1f}" '
            f'width="{bar_w:.1f}" height="{completion_h:.1f}"/>'
        )
        parts.append("</g>")
        if index % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{row.day.strftime('%m-%d')}</text>"
            )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" '
        f'y2="{TOP + plot_h}"/>'
    )
    parts.append("</svg>")
    # Every interpolated text went through escape(); the rest is numbers and fixed markup.
    return Markup("".join(parts))  # noqa: S704


def meter(fraction: float, label: str) -> Markup:
    """A thin horizontal gauge (capacity in use, disk used)."""
    percent = max(0.0, min(fraction, 1.0)) * 100
    return Markup(  # noqa: S704 (only a number and an escaped label are interpolated)
        f'<div class="meter"><svg viewBox="0 0 100 4" preserveAspectRatio="none" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(label)}">'
        f'<rect x="0" y="0" height="4" width="{percent:.1f}"/></svg></div>'
    )


def tenant_tokens_chart(rows: list[tuple[str, date, int]], start: date, end: date) -> Markup:
    """One line per tenant: its (tenant, UTC day, tokens) rows over the days of the window."""
    days = [start + timedelta(days=offset) for offset in range((end - start).days + 1)]
    per_tenant: dict[str, dict[date, int]] = {}
    for tenant, day, tokens in rows:
        per_tenant.setdefault(tenant, {})[day] = tokens
    series = [
        (name, [float(by_day.get(day, 0)) for day in days])
        for name, by_day in sorted(per_tenant.items())
    ]
    labels = [day.strftime("%m-%d") if len(days) <= 16 or i % 7 == 0 else "" for i, day in
              enumerate(days)]  # fmt: skip
    svg = curve_svg("Tokens per tenant per day", labels, series, "UTC day (tokens)")
    return Markup(svg)  # noqa: S704 - curve_svg escapes every label it draws
