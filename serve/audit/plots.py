"""Plots as inline SVG strings: no JavaScript, no external assets, every label escaped."""

from __future__ import annotations

import math
from html import escape

from serve.audit.report import Plot

WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 48
COLOURS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989")


def _ticks(low: float, high: float, count: int = 5, whole: bool = False) -> list[float]:
    """Round tick values; `whole` keeps them integers (counts of rows)."""
    if high <= low:
        return [low]
    step = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(step))
    step = min((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= step), default=step)
    if whole:
        step = max(1.0, round(step))
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def render_svg(plot: Plot) -> str:
    """The plot as an <svg> element; an empty plot says why instead of drawing axes."""
    title = escape(plot.title)
    if not plot.series or not any(series.x for series in plot.series):
        return (
            f'<svg class="plot" role="img" aria-label="{title}" width="{WIDTH}" height="60" '
            f'xmlns="http://www.w3.org/2000/svg"><text x="8" y="32" class="empty">'
            f"{escape(plot.note or 'nothing to plot')}</text></svg>"
        )
    xs = [x for series in plot.series for x in series.x]
    ys = [y for series in plot.series for y in series.y]
    x_low, x_high = min(xs), max(xs)
    if plot.kind == "histogram" and len(plot.series[0].x) > 1:
        half = (plot.series[0].x[1] - plot.series[0].x[0]) / 2
        x_low, x_high = x_low - half, x_high + half
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    y_low, y_high = 0.0, max(ys) if ys and max(ys) > 0 else 1.0
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x_low) / (x_high - x_low) * inner_w

    def sy(y: float) -> float:
        return TOP + inner_h - (y - y_low) / (y_high - y_low) * inner_h

    parts = [
        f'<svg class="plot" role="img" aria-label="{title}" width="{WIDTH}" height="{HEIGHT + 20 * len(plot.series)}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT + 20 * len(plot.series)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in _ticks(y_low, y_high, whole=plot.kind == "histogram"):
        y = sy(tick)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_fmt(tick)}</text>'
        )
    for tick in _ticks(x_low, x_high, whole=plot.kind == "line" and all(float(x).is_integer() for x in xs)):
        x = sx(tick)
        parts.append(
            f'<text x="{x:.1f}" y="{TOP + inner_h + 16}" text-anchor="middle" class="tick">{_fmt(tick)}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" y1="{TOP + inner_h}" x2="{WIDTH - RIGHT}" y2="{TOP + inner_h}" class="axis"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + inner_h}" class="axis"/>'
    )
    for index, series in enumerate(plot.series):
        colour = COLOURS[index % len(COLOURS)]
        if plot.kind == "histogram":
            width = (sx(series.x[1]) - sx(series.x[0])) if len(series.x) > 1 else inner_w / 2
            for x, y in zip(series.x, series.y, strict=False):
                if y <= 0:
                    continue
                parts.append(
                    f'<rect x="{sx(x) - width / 2:.1f}" y="{sy(y):.1f}" width="{max(width - 1, 1):.1f}" '
                    f'height="{sy(0) - sy(y):.1f}" fill="{colour}" fill-opacity="0.55"/>'
                )
        else:
            points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(series.x, series.y, strict=False))
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            parts += [
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>'
                for x, y in zip(series.x, series.y, strict=False)
            ]
        legend_y = HEIGHT + 14 + 20 * index
        parts.append(
            f'<rect x="{LEFT}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{LEFT + 16}" y="{legend_y}" class="legend">{escape(series.name)}</text>'
        )
    parts.append(
        f'<text x="{LEFT + inner_w / 2:.1f}" y="{TOP + inner_h + 34}" text-anchor="middle" class="label">'
        f"{escape(plot.x_label)}</text>"
        f'<text x="14" y="{TOP + inner_h / 2:.1f}" text-anchor="middle" class="label" '
        f'transform="rotate(-90 14 {TOP + inner_h / 2:.1f})">{escape(plot.y_label)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
