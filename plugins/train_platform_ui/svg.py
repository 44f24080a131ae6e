"""A sample's channels over time as an inline SVG, drawn on the server (no script, no CDN).

One polyline per channel on a shared value axis, so channels of different amplitude keep
their proportions; the axis shows the smallest and largest value, the x axis the time steps
(and the recording's start and end time when the sample has them). Long series are reduced
to at most ``max_points`` columns, each keeping its minimum and maximum, so spikes survive.
Missing readings (NaN) break a line instead of being drawn as zero. Colours are the
Okabe-Ito palette, readable with the common colour-vision deficiencies; the legend names
each channel.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

import numpy as np

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _reduce(values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one channel with at most ``2 * max_points`` points (min and max per
    column), in time order."""
    n = values.shape[0]
    x = np.arange(n, dtype=np.float64)
    if n <= 2 * max_points:
        return x, values.astype(np.float64)
    edges = np.linspace(0, n, max_points + 1).astype(int)
    xs, ys = [], []
    for start, end in zip(edges[:-1], edges[1:]):
        chunk = values[start:end]
        finite = np.isfinite(chunk)
        if not finite.any():
            xs.append(float(start))
            ys.append(np.nan)
            continue
        lo, hi = int(np.nanargmin(chunk)), int(np.nanargmax(chunk))
        for i in sorted({lo, hi}):
            xs.append(float(start + i))
            ys.append(float(chunk[i]))
    return np.asarray(xs), np.asarray(ys)


def _number(value: float) -> str:
    return f"{value:.3g}"


def series_svg(
    series: np.ndarray | None,
    *,
    title: str,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    width: int = 560,
    height: int = 170,
    max_points: int = 400,
) -> str:
    """The SVG markup of a ``(T, C)`` series. ``title`` is its accessible name."""
    label = escape(title)
    if series is None or np.asarray(series).size == 0:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{label}" width="{width}" height="40" '
                f'viewBox="0 0 {width} 40"><title>{label}</title><text x="8" y="24" class="tp-plot-empty">'
                f'the series is stored outside the table and is not drawn here</text></svg>')
    data = np.asarray(series, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    steps, channels = data.shape
    left, right, top, bottom = 52, 8, 8, 34
    legend_h = 16 * ((channels + 5) // 6)
    plot_w, plot_h = width - left - right, height - top - bottom
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi == lo:
        lo, hi = lo - 1.0, hi + 1.0
    x_scale = plot_w / max(steps - 1, 1)
    y_scale = plot_h / (hi - lo)
    total_h = height + legend_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{label}" width="{width}" height="{total_h}" '
        f'viewBox="0 0 {width} {total_h}" class="tp-plot">',
        f"<title>{label}</title>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    zero_y = top + (hi - 0.0) * y_scale
    if lo < 0.0 < hi:
        parts.append(f'<line x1="{left}" y1="{zero_y:.1f}" x2="{left + plot_w}" y2="{zero_y:.1f}" stroke="#ddd"/>')
    for channel in range(channels):
        colour = PALETTE[channel % len(PALETTE)]
        xs, ys = _reduce(data[:, channel], max_points)
        segment: list[str] = []
        segments: list[list[str]] = []
        for x, y in zip(xs, ys):
            if not np.isfinite(y):
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{left + x * x_scale:.1f},{top + (hi - y) * y_scale:.1f}")
        if segment:
            segments.append(segment)
        for points in segments:
            if len(points) == 1:
                cx, cy = points[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="1.5" fill="{colour}"/>')
            else:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{" ".join(points)}"/>')
    text = 'font-family="sans-serif" font-size="11" fill="#333"'
    parts.append(f'<text x="{left - 4}" y="{top + 10}" text-anchor="end" {text}>{_number(hi)}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" {text}>{_number(lo)}</text>')
    axis_y = top + plot_h + 14
    start = escape(f"{start_time:%Y-%m-%d %H:%M:%S}") if start_time else "0"
    end = escape(f"{end_time:%Y-%m-%d %H:%M:%S}") if end_time else str(steps - 1)
    parts.append(f'<text x="{left}" y="{axis_y}" {text}>{start}</text>')
    parts.append(f'<text x="{left + plot_w}" y="{axis_y}" text-anchor="end" {text}>{end}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{axis_y}" text-anchor="middle" {text}>{steps} steps</text>')
    for channel in range(channels):
        row, col = divmod(channel, 6)
        x = left + col * 80
        y = height + row * 16
        colour = PALETTE[channel % len(PALETTE)]
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{y}" {text}>channel {channel}</text>')
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["PALETTE", "series_svg"]
