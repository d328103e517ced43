"""The record browser: filters from a query string, one page of records from the store
(`Store.record_page`, keyed by plan order), rendered as the report's trial rows.

Filters: `model`, `cell` (the grid as the store keeps it), `status` (done, failed),
`score` (`NAME=true|false|null|NUMBER`), `verdict` (a judge metric as `trialrun stats`
takes it: `judge.answer=pass`, `judges.strict.coherent`), `after` (the last plan position
shown) and `n` (records a page, at most `MAX_PAGE`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape
from typing import Any

import orjson

from trialrun.config import Experiment
from trialrun.errors import UsageError
from trialrun.hashing import canonical
from trialrun.metrics import available, parse_metric
from trialrun.report.data import ReportOptions
from trialrun.report.trials import TrialSampler
from trialrun.runs import Run
from trialrun.store import RecordQuery
from trialrun.view.pages import select

PAGE = 50
MAX_PAGE = 200
MAX_CELLS = 1000
"""Cells offered in the filter at most (the `cell` parameter takes any)."""
FILTERS = ("model", "cell", "status", "score", "verdict")


@dataclass(frozen=True)
class Browse:
    """A page of the browser, rendered: the form, the rows, the next page's query."""

    form: str
    rows: str
    shown: int
    next_query: dict[str, str] | None


def browse(run: Run, params: dict[str, str]) -> Browse:
    """One page of `run`'s records under the filters in `params`; a filter that cannot be
    read shows its reason in the form and matches nothing."""
    experiment = run.experiment()
    try:
        query = record_query(experiment, params)
        error = ""
    except (UsageError, ValueError) as exc:
        query, error = None, str(exc)
    form = _form(run, experiment, params, error)
    if query is None:
        return Browse(form, "", 0, None)
    with run.store() as store:
        found = store.record_page(query)
    sampler = TrialSampler(
        experiment, run.meta(), len(found.rows), ReportOptions(max_trials=len(found.rows))
    )
    for _, text in found.rows:
        sampler.offer(orjson.loads(text))
    rows = "".join(_row(row.cells, row.search, row.details) for row in sampler.rows)
    next_query = None
    if found.more:
        next_query = {k: v for k, v in params.items() if k in FILTERS and v}
        next_query |= {"after": str(found.rows[-1][0]), "n": str(query.limit)}
    return Browse(form, rows, len(found.rows), next_query)


def record_query(experiment: Experiment, params: dict[str, str]) -> RecordQuery:
    """The store query the parameters ask for (UsageError/ValueError naming a bad one)."""
    conditions: list[tuple[str, Any]] = []
    if params.get("score"):
        conditions.append(_score_condition(experiment, params["score"]))
    if params.get("verdict"):
        conditions.append(_verdict_condition(experiment, params["verdict"]))
    return RecordQuery(
        model=params.get("model") or None,
        grid=params.get("cell") or None,
        status=params.get("status") or None,
        json=tuple(conditions),
        after_seq=int(params.get("after") or -1),
        limit=max(1, min(int(params.get("n") or PAGE), MAX_PAGE)),
    )


def _score_condition(experiment: Experiment, text: str) -> tuple[str, Any]:
    name, _, raw = text.partition("=")
    if name not in experiment.scores:
        known = ", ".join(experiment.scores) or "none"
        raise UsageError(f"score filter {text!r}: no score {name!r} (this run's: {known})")
    return "$.scores." + json.dumps(name), _value(raw or "true")


def _verdict_condition(experiment: Experiment, text: str) -> tuple[str, Any]:
    metric = parse_metric(text, experiment)
    if metric.source != "judge" or metric.field is None:
        raise UsageError(f"verdict filter {text!r}: name a judge field, e.g. judge.answer=pass")
    head = "$.judge" if metric.primary else "$.judges." + json.dumps(metric.name)
    expected = True if metric.expected is None else metric.expected
    return f"{head}.{json.dumps(metric.field)}", expected


def _value(raw: str) -> Any:
    """true/false/null, a number, or the text itself."""
    if raw in ("true", "false", "null"):
        return json.loads(raw)
    try:
        return float(raw) if any(c in raw for c in ".eE") else int(raw)
    except ValueError:
        return raw


def _form(run: Run, experiment: Experiment, params: dict[str, str], error: str) -> str:
    cells = list(itertools.islice(_cells(experiment), MAX_CELLS))
    models = [(m.label, m.label) for m in experiment.models]
    scores = [
        (f"{n}={v}", f"{n}={v}") for n in experiment.scores for v in ("true", "false", "null")
    ]
    verdicts = [m for m in available(experiment) if m.startswith("judge")]
    fields = [
        select("model", models, params.get("model", "")),
        select("cell", [(c, _cell_label(c)) for c in cells], params.get("cell", "")),
        select("status", [("done", "done"), ("failed", "failed")], params.get("status", "")),
        select("score", scores, params.get("score", "")),
        "<label>verdict <input name=verdict list=verdicts size=28 placeholder='judge.answer=pass'"
        f" value='{escape(params.get('verdict', ''))}'></label><datalist id=verdicts>"
        + "".join(f"<option value='{escape(v)}'>" for v in verdicts)
        + "</datalist>",
        "<button type=submit>filter</button>",
    ]
    shown = f"<p class=warn id=filter-error>{escape(error)}</p>" if error else ""
    return f"<form class=filters method=get>{''.join(fields)}</form>{shown}"


def _cells(experiment: Experiment) -> Iterator[str]:
    """Each grid cell as the store keeps it (canonical JSON), in the grid's order."""
    keys = list(experiment.grid)
    for values in itertools.product(*experiment.grid.values()):
        yield canonical(dict(zip(keys, values, strict=True)))


def _cell_label(grid: str) -> str:
    try:
        values = json.loads(grid)
    except ValueError:
        return grid
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "(no grid)"


def _row(cells: list[str], search: str, details: str) -> str:
    tds = "".join(f"<td>{escape(cell)}</td>" for cell in cells)
    status = escape(cells[4]) if len(cells) > 4 else ""
    return (
        f"<tr class=t data-st='{status}'>{tds}</tr>"
        f"<tr class=d hidden><td colspan={len(cells)}>{details}</td></tr>"
    )
