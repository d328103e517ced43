"""A statistics report's groups and comparisons as charts: the bars of every group, a
heatmap for each pair of grid axes, lines over each numeric grid axis, a forest plot of
the paired differences. Only numbers from `trialrun.analysis` are drawn; a heatmap over
a run with more axes pools the groups of its other axes (successes over n), and says so.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

from trialrun.analysis import Comparison, Group, StatsReport
from trialrun.report.svg import Bar, ForestRow, Series, bar_chart, forest_plot, heatmap, line_plot

MAX_BARS = 80
MAX_HEATMAPS = 6
MAX_SERIES = 10
MAX_FOREST = 60


def group_label(group: Group) -> str:
    parts = [group.model, *(f"{k}={v}" for k, v in {**group.grid, **group.strata}.items())]
    return " ".join(str(p) for p in parts)


def side_label(side: dict[str, Any]) -> str:
    parts = [side.get("run", ""), side["model"], *(f"{k}={v}" for k, v in side["grid"].items())]
    return " ".join(str(p) for p in parts if p != "")


def comparison_label(comparison: Comparison) -> str:
    strata = " ".join(f"{k}={v}" for k, v in comparison.strata.items())
    return f"{side_label(comparison.a)} − {side_label(comparison.b)} {strata}".strip()


def charts(report: StatsReport, fdr: float) -> list[str]:
    """Every chart of one metric's report, as SVG strings (notes as plain strings)."""
    unit = report.kind == "binary"
    out = [groups_chart(report, unit)]
    out += heatmaps(report, unit)
    out += line_plots(report, unit)
    if report.comparisons:
        out.append(forest(report, fdr))
    return out


def groups_chart(report: StatsReport, unit: bool) -> str:
    groups = report.groups[:MAX_BARS]
    bars = [
        Bar(group_label(g), g.rate, g.ci_low, g.ci_high, f"n={g.n}" if g.rate is not None else "")
        for g in groups
    ]
    more = f" (first {MAX_BARS} of {len(report.groups)})" if len(report.groups) > MAX_BARS else ""
    what = "rate" if unit else "mean"
    return bar_chart(bars, f"{report.metric}: {what} per group, 95% CI{more}", unit_range=unit)


def _axes(groups: Sequence[Group]) -> dict[str, list[Any]]:
    """Grid keys with two values or more, each with its values in first-seen order."""
    values: dict[str, dict[str, Any]] = {}
    for group in groups:
        for key, value in group.grid.items():
            values.setdefault(key, {})[json.dumps(value, sort_keys=True)] = value
    return {k: list(v.values()) for k, v in values.items() if len(v) > 1}


def heatmaps(report: StatsReport, unit: bool) -> list[str]:
    axes = _axes(report.groups)
    models = list(dict.fromkeys(g.model for g in report.groups))
    out: list[str] = []
    for (x_key, xs), (y_key, ys) in itertools.combinations(axes.items(), 2):
        for model in models:
            if len(out) >= MAX_HEATMAPS:
                return out
            out.append(_heatmap(report, model, (x_key, xs), (y_key, ys), len(axes) > 2, unit))
    return out


def _heatmap(
    report: StatsReport,
    model: str,
    x_axis: tuple[str, list[Any]],
    y_axis: tuple[str, list[Any]],
    pooled: bool,
    unit: bool,
) -> str:
    (x_key, xs), (y_key, ys) = x_axis, y_axis
    sums: dict[tuple[str, str], list[float]] = {}
    for group in report.groups:
        if group.model != model or group.rate is None or x_key not in group.grid:
            continue
        key = (str(group.grid[x_key]), str(group.grid.get(y_key)))
        total = sums.setdefault(key, [0.0, 0.0])
        total[0] += group.rate * group.n
        total[1] += group.n
    cells = {k: s / n for k, (s, n) in sums.items() if n}
    how = ", pooled over the other axes" if pooled else ""
    title = f"{report.metric}: {model}, {y_key} × {x_key}{how}"
    return heatmap([str(x) for x in xs], [str(y) for y in ys], cells, title,
                   x_name=x_key, y_name=y_key, unit_range=unit)  # fmt: skip


def line_plots(report: StatsReport, unit: bool) -> list[str]:
    out = []
    for key, values in _axes(report.groups).items():
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            continue
        series: dict[str, list[tuple[float, float, float | None, float | None]]] = {}
        for g in report.groups:
            if g.rate is None or key not in g.grid:
                continue
            rest = " ".join(f"{k}={v}" for k, v in {**g.grid, **g.strata}.items() if k != key)
            name = f"{g.model} {rest}".strip()
            series.setdefault(name, []).append((float(g.grid[key]), g.rate, g.ci_low, g.ci_high))
        shown = [Series(name, points) for name, points in list(series.items())[:MAX_SERIES]]
        more = f" (first {MAX_SERIES} of {len(series)} lines)" if len(series) > MAX_SERIES else ""
        title = f"{report.metric} over {key}, 95% CI band{more}"
        out.append(line_plot(shown, title, x_name=key, unit_range=unit))
    return out


def forest(report: StatsReport, fdr: float) -> str:
    rows = [
        ForestRow(comparison_label(c), c.diff, c.diff_ci_low, c.diff_ci_high, c.q_value,
                  c.q_value <= fdr)
        for c in report.comparisons[:MAX_FOREST]
    ]  # fmt: skip
    more = (
        f", first {MAX_FOREST} of {len(report.comparisons)}"
        if len(rows) < len(report.comparisons)
        else ""
    )
    title = f"{report.metric}: paired differences (a − b), 95% CI; * q ≤ {fdr:g}{more}"
    return forest_plot(rows, title)
