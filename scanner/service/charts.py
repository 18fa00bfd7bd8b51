"""Line charts as inline SVG, drawn on the server: the dashboard needs no JavaScript."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT, MARGIN = 640, 220, 36
PALETTE = ("#b2182b", "#ef8a62", "#2166ac", "#67a9cf", "#1b7837", "#762a83", "#e08214",
           "#5aae61", "#8c510a", "#4d4d4d")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[int]  # one per x label
    colour: str = ""


def line_chart(title: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """One polyline and one circle per data point for each series, with a legend; every label
    is escaped (scan ids and clause names reach the page)."""
    peak = max((v for s in series for v in s.values), default=0) or 1
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    step = plot_w / max(len(labels) - 1, 1)

    def point(index: int, value: int) -> tuple[float, float]:
        return MARGIN + index * step, MARGIN + plot_h - value / peak * plot_h

    parts = [f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT + 20 * len(series)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
             f'<line class="axis" x1="{MARGIN}" y1="{MARGIN + plot_h}" x2="{WIDTH - MARGIN}" '
             f'y2="{MARGIN + plot_h}"/>',
             f'<line class="axis" x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" '
             f'y2="{MARGIN + plot_h}"/>',
             f'<text class="tick" x="{MARGIN - 6}" y="{MARGIN + 4}" text-anchor="end">{peak}'
             '</text>',
             f'<text class="tick" x="{MARGIN - 6}" y="{MARGIN + plot_h + 4}" '
             'text-anchor="end">0</text>']
    for index, label in enumerate(labels):
        x, _ = point(index, 0)
        parts.append(f'<text class="tick" x="{x:.1f}" y="{MARGIN + plot_h + 16}" '
                     f'text-anchor="middle">{escape(label)}</text>')
    for number, line in enumerate(series):
        colour = line.colour or PALETTE[number % len(PALETTE)]
        points = [point(i, v) for i, v in enumerate(line.values)]
        parts.append(f'<polyline class="series" fill="none" stroke="{colour}" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
        for (x, y), value in zip(points, line.values, strict=True):
            parts.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3.5" '
                         f'fill="{colour}"><title>{escape(line.name)}: {value}</title></circle>')
        legend_y = HEIGHT + 20 * number + 4
        parts.append(f'<rect x="{MARGIN}" y="{legend_y}" width="12" height="12" '
                     f'fill="{colour}"/><text class="legend" x="{MARGIN + 18}" '
                     f'y="{legend_y + 11}">{escape(line.name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
