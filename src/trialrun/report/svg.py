"""Charts as inline SVG strings, built here from numbers the analysis computed: bars with
CI whiskers, a heatmap, line plots with CI bands, and a forest plot. No JavaScript, no
library: they render in any browser, offline, and print. Every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
LABEL_W = 260
PLOT_W = 420
ROW_H = 20
FONT = "font-family='system-ui,sans-serif' font-size='12'"


@dataclass(frozen=True)
class Bar:
    """One estimate with its interval (either bound None: no interval)."""

    label: str
    value: float | None
    low: float | None
    high: float | None
    note: str = ""


def _svg(width: float, height: float, title: str, body: str) -> str:
    return (
        f"<svg class='chart' xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' "
        f"height='{height:.0f}' viewBox='0 0 {width:.0f} {height:.0f}' role='img' {FONT}>"
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' {extra}>{escape(text)}</text>"


def _line(x1: float, y1: float, x2: float, y2: float, style: str = "stroke='#333'") -> str:
    return f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' {style}/>"


def _scale(lo: float, hi: float, width: float) -> tuple[float, float]:
    """(lo, hi) padded so that neither is zero-width."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        return lo - 0.5, hi + 0.5
    return lo, hi


def _axis(x0: float, y: float, width: float, lo: float, hi: float, ticks: int = 5) -> str:
    parts = [_line(x0, y, x0 + width, y)]
    for i in range(ticks + 1):
        value = lo + (hi - lo) * i / ticks
        x = x0 + width * i / ticks
        parts.append(_line(x, y, x, y + 4))
        parts.append(_text(x, y + 16, f"{value:.3g}", "middle"))
    return "".join(parts)


def bar_chart(bars: Sequence[Bar], title: str, *, unit_range: bool) -> str:
    """Horizontal bars with CI whiskers, one row per estimate (unit_range: axis 0 to 1)."""
    values = [v for b in bars for v in (b.value, b.low, b.high) if v is not None]
    lo, hi = (0.0, 1.0) if unit_range else _scale(min([0.0, *values]), max([0.0, *values]), 1)
    height = 30 + ROW_H * len(bars) + 30
    x0 = LABEL_W

    def at(value: float) -> float:
        return x0 + PLOT_W * (value - lo) / (hi - lo)

    parts = [_text(4, 16, title, extra="font-weight='bold'")]
    for index, bar in enumerate(bars):
        y = 30 + ROW_H * index
        parts.append(_text(x0 - 6, y + 14, _clip(bar.label, 38), "end"))
        if bar.value is None:
            parts.append(_text(x0 + 4, y + 14, bar.note or "no value", extra="fill='#888'"))
            continue
        color = PALETTE[0]
        parts.append(
            f"<rect class='bar' x='{min(at(0), at(bar.value)):.1f}' y='{y + 3}' "
            f"width='{abs(at(bar.value) - at(0)):.1f}' height='{ROW_H - 6}' fill='{color}' "
            f"fill-opacity='0.55'><title>{escape(f'{bar.label}: {bar.value:.4g}')}</title></rect>"
        )
        if bar.low is not None and bar.high is not None:
            mid = y + ROW_H / 2
            parts.append(_line(at(bar.low), mid, at(bar.high), mid, "stroke='#000' class='ci'"))
            parts += [_line(at(v), mid - 5, at(v), mid + 5) for v in (bar.low, bar.high)]
        parts.append(_text(x0 + PLOT_W + 6, y + 14, f"{bar.value:.3f} {bar.note}".strip()))
    parts.append(_axis(x0, 30 + ROW_H * len(bars) + 2, PLOT_W, lo, hi))
    return _svg(x0 + PLOT_W + 120, height, title, "".join(parts))


def heatmap(
    xs: Sequence[str],
    ys: Sequence[str],
    cells: dict[tuple[str, str], float],
    title: str,
    *,
    x_name: str,
    y_name: str,
    unit_range: bool,
) -> str:
    """A grid of colored cells (white → blue), the value written in each."""
    size = max(18.0, min(60.0, 600.0 / max(len(xs), 1)))
    x0, y0 = 120.0, 40.0
    values = list(cells.values())
    lo, hi = (0.0, 1.0) if unit_range else _scale(min(values, default=0), max(values, default=1), 1)
    parts = [_text(4, 16, title, extra="font-weight='bold'")]
    for j, y_value in enumerate(ys):
        parts.append(_text(x0 - 6, y0 + size * j + size / 2 + 4, _clip(y_value, 16), "end"))
        for i, x_value in enumerate(xs):
            value = cells.get((x_value, y_value))
            x, y = x0 + size * i, y0 + size * j
            fill = "#eee" if value is None else _blue((value - lo) / (hi - lo))
            tip = f"{x_name}={x_value}, {y_name}={y_value}: " + (
                "no value" if value is None else f"{value:.4g}"
            )
            parts.append(
                f"<rect class='cell' x='{x:.1f}' y='{y:.1f}' width='{size:.1f}' "
                f"height='{size:.1f}' fill='{fill}' stroke='#fff'><title>{escape(tip)}</title></rect>"
            )
            if value is not None and size >= 34:
                dark = (value - lo) / (hi - lo) > 0.6
                parts.append(_text(x + size / 2, y + size / 2 + 4, f"{value:.2f}", "middle",
                                   f"fill='{'#fff' if dark else '#000'}'"))  # fmt: skip
    bottom = y0 + size * len(ys)
    for i, x_value in enumerate(xs):
        parts.append(_text(x0 + size * i + size / 2, bottom + 14, _clip(x_value, 8), "middle"))
    parts.append(_text(x0 + size * len(xs) / 2, bottom + 32, x_name, "middle"))
    parts.append(_text(12, y0 - 8, y_name))
    legend = f"scale: {lo:.3g} (white) to {hi:.3g} (dark blue)"
    parts.append(_text(x0, bottom + 50, legend, extra="fill='#555'"))
    width = max(x0 + size * len(xs) + 20, 380)
    return _svg(width, bottom + 60, title, "".join(parts))


def _blue(t: float) -> str:
    t = min(max(t, 0.0), 1.0)
    r, g, b = (int(255 + (c - 255) * t) for c in (8, 48, 107))
    return f"rgb({r},{g},{b})"


@dataclass(frozen=True)
class Series:
    """One line: (x, value, low, high) points."""

    name: str
    points: list[tuple[float, float, float | None, float | None]]


def line_plot(series: Sequence[Series], title: str, *, x_name: str, unit_range: bool) -> str:
    """Lines over a numeric axis, each with a shaded CI band, and a legend."""
    xs = [p[0] for s in series for p in s.points]
    ys = [v for s in series for p in s.points for v in p[1:] if v is not None]
    x_lo, x_hi = _scale(min(xs, default=0), max(xs, default=1), 1)
    y_lo, y_hi = (0.0, 1.0) if unit_range else _scale(min(ys, default=0), max(ys, default=1), 1)
    x0, y0, w, h = 60.0, 30.0, 460.0, 240.0

    def px(x: float) -> float:
        return x0 + w * (x - x_lo) / (x_hi - x_lo)

    def py(y: float) -> float:
        return y0 + h - h * (y - y_lo) / (y_hi - y_lo)

    parts = [_text(4, 16, title, extra="font-weight='bold'"), _axis(x0, y0 + h, w, x_lo, x_hi)]
    parts.append(_line(x0, y0, x0, y0 + h))
    for i in range(5):
        value = y_lo + (y_hi - y_lo) * i / 4
        parts.append(_text(x0 - 6, py(value) + 4, f"{value:.3g}", "end"))
    for index, one in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        points = sorted(one.points)
        band = [(px(x), py(hi)) for x, _, _, hi in points if hi is not None]
        band += [(px(x), py(lo)) for x, _, lo, _ in reversed(points) if lo is not None]
        if len(band) > 2:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in band)
            parts.append(f"<polygon points='{coords}' fill='{color}' fill-opacity='0.15'/>")
        coords = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v, _, _ in points)
        parts.append(f"<polyline class='series' points='{coords}' fill='none' stroke='{color}' "
                     "stroke-width='2'/>")  # fmt: skip
        parts += [f"<circle cx='{px(x):.1f}' cy='{py(v):.1f}' r='3' fill='{color}'/>"
                  for x, v, _, _ in points]  # fmt: skip
        ly = y0 + 14 * index
        parts.append(_line(x0 + w + 14, ly, x0 + w + 30, ly, f"stroke='{color}' stroke-width='3'"))
        parts.append(_text(x0 + w + 34, ly + 4, _clip(one.name, 40)))
    parts.append(_text(x0 + w / 2, y0 + h + 34, x_name, "middle"))
    return _svg(x0 + w + 300, y0 + h + 44, title, "".join(parts))


@dataclass(frozen=True)
class ForestRow:
    """One paired difference with its CI and q-value."""

    label: str
    diff: float
    low: float
    high: float
    q: float
    flagged: bool


def forest_plot(rows: Sequence[ForestRow], title: str) -> str:
    """Each difference as a point with its CI whiskers around a zero line; q at the right,
    flagged rows (q at most the FDR) in red."""
    values = [v for r in rows for v in (r.diff, r.low, r.high) if math.isfinite(v)]
    bound = max([abs(v) for v in values] + [1e-9]) * 1.05
    lo, hi = -bound, bound
    x0 = LABEL_W + 60

    def at(value: float) -> float:
        return x0 + PLOT_W * (value - lo) / (hi - lo)

    height = 30 + ROW_H * len(rows) + 30
    parts = [_text(4, 16, title, extra="font-weight='bold'")]
    parts.append(
        _line(at(0), 26, at(0), 30 + ROW_H * len(rows), "stroke='#999' stroke-dasharray='3 3'")
    )
    parts.append(_text(x0 + PLOT_W + 8, 26, "q", extra="font-style='italic'"))
    for index, row in enumerate(rows):
        y = 30 + ROW_H * index + ROW_H / 2
        color = "#d62728" if row.flagged else "#1f77b4"
        parts.append(_text(x0 - 6, y + 4, _clip(row.label, 46), "end"))
        if math.isfinite(row.low) and math.isfinite(row.high):
            parts.append(_line(at(row.low), y, at(row.high), y, f"stroke='{color}' class='ci'"))
        tip = f"{row.label}: {row.diff:+.4f} [{row.low:+.4f}, {row.high:+.4f}], q={row.q:.3g}"
        parts.append(
            f"<rect class='point' x='{at(row.diff) - 4:.1f}' y='{y - 4:.1f}' width='8' "
            f"height='8' fill='{color}'><title>{escape(tip)}</title></rect>"
        )
        parts.append(_text(x0 + PLOT_W + 8, y + 4, f"{row.q:.3g}{' *' if row.flagged else ''}"))
    parts.append(_axis(x0, 30 + ROW_H * len(rows) + 2, PLOT_W, lo, hi, 4))
    return _svg(x0 + PLOT_W + 80, height, title, "".join(parts))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
