"""Printing a statistics report (`stats`, `compare`): tables, or the `--json` form."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from trialrun import api
from trialrun.cli.common import stdout


def print_report(report: api.StatsReport, *, as_json: bool, fdr: float) -> None:
    console = stdout()
    if as_json:
        console.out(json.dumps(report.as_json(), indent=2, allow_nan=False), highlight=False)
        return
    rate = "mean" if report.kind == "numeric" else "rate"
    console.print(f"metric: {report.metric} ({report.kind}: the {rate} per group)")
    console.print(_groups_table(report, rate))
    if report.comparisons:
        console.print(_comparisons_table(report, fdr))
        console.print(
            f"q: {report.q_method} ({len(report.comparisons)}); "
            f"* marks q <= {fdr:g} (the FDR asked for with --fdr)"
        )
    for note in report.notes:
        console.print(f"note: {note}", markup=False)


def _groups_table(report: api.StatsReport, rate: str) -> Table:
    runs = len({g.run for g in report.groups}) > 1
    strata = list(report.groups[0].strata) if report.groups else []
    table = Table(*(["run"] if runs else []), "model", "grid", *strata, title="groups")
    for name in ("n", "missing", "successes", rate, "95% CI"):
        table.add_column(name, justify="right")
    table.add_column("CI method")
    for g in report.groups:
        row = [*([g.run] if runs else []), g.model, _cell(g.grid)]
        row += [str(g.strata[s]) for s in strata]
        successes = "" if g.successes is None else str(g.successes)
        row += [str(g.n), str(g.missing), successes, _num(g.rate), _ci(g.ci_low, g.ci_high)]
        table.add_row(*row, g.ci_method)
    return table


def _comparisons_table(report: api.StatsReport, fdr: float) -> Table:
    strata = list(report.comparisons[0].strata)
    table = Table("a", "b", *strata, title=f"paired comparisons ({report.compare})")
    for name in ("pairs", "a_only", "b_only", "diff [95% CI]", "p", "q", "h"):
        table.add_column(name, justify="right")
    table.add_column("test")
    for c in report.comparisons:
        star = " *" if c.q_value <= fdr else ""
        h = "" if c.cohens_h is None else f"{c.cohens_h:+.3f}"
        diff = f"{c.diff:+.4f} {_ci(c.diff_ci_low, c.diff_ci_high)}"
        table.add_row(
            _side(c.a), _side(c.b), *(str(c.strata[s]) for s in strata), str(c.n_pairs),
            str(c.a_only), str(c.b_only), diff, _p(c.p_value), _p(c.q_value) + star, h, c.test,
        )  # fmt: skip
    return table


def _side(side: dict[str, Any]) -> str:
    parts = [side.get("run", ""), side["model"], _cell(side["grid"])]
    return " ".join(p for p in parts if p)


def _cell(grid: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in grid.items())


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _ci(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"[{low:.4f}, {high:.4f}]"


def _p(value: float) -> str:
    return f"{value:.3g}" if value >= 1e-4 else f"{value:.1e}"
