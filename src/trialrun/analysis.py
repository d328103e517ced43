"""Records into the statistics `trialrun stats` and `trialrun compare` print: rows in,
estimates out (STYLE.md 12); the formulas are `trialrun.stats`'.

- Groups: one per run × model × grid cell × stratum (`--by item.category`, any item
  field; `grid.KEY` and `model` work too). Each has n (records with a value), missing
  (failed trials, null scores, judge errors: counted, never dropped), the rate (Wilson or
  exact CI) or mean (normal CI). When an item appears more than once in a group (repeats)
  the CI is clustered by item (Miller 2024): for a rate, Wilson at the effective n, so it
  stays in [0, 1] and never collapses to a point at 0% or 100%; `ci_method` says so.
- Comparisons (`compare="model"`, `"grid.NAME"`, or across runs): every pair of sides
  within the same context (the rest of the group's key), matched by item id and repeat.
  Binary: McNemar (exact below 25 discordant pairs), the difference with a paired
  bootstrap CI, Cohen's h; numeric: a paired t-test and the same bootstrap. q-values are
  Benjamini-Hochberg over every comparison in the report.

Records are streamed from the store and only a few numbers kept per record (an item
code, the repeat, the value), so 200,000 records fit in tens of MB.
"""

from __future__ import annotations

import itertools
import json
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from trialrun import stats
from trialrun.errors import TrialrunError, UsageError
from trialrun.metrics import Metric, parse_metric
from trialrun.runs import Run

REPEAT_BITS = 24
"""Pairs are matched on `item code << REPEAT_BITS | repeat`: one int per record."""
MISSING_NOTE = (
    "missing = failed trials, null scores and judge errors: counted per group, left out of "
    "n and of the rate; a pair with a missing side is left out of its comparison"
)


@dataclass
class _Cell:
    """One group's observations: a pairing key and a value (NaN when missing) per record."""

    run: str
    model: str
    grid: dict[str, Any]
    strata: dict[str, Any]
    keys: array[int] = field(default_factory=lambda: array("q"))
    values: array[float] = field(default_factory=lambda: array("d"))


@dataclass(frozen=True)
class Group:
    """One group's estimate (the `groups` rows of `stats --json`)."""

    run: str
    model: str
    grid: dict[str, Any]
    strata: dict[str, Any]
    n: int
    missing: int
    successes: int | None
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str
    items: int


@dataclass(frozen=True)
class Comparison:
    """One paired comparison (the `comparisons` rows of `stats --json`)."""

    a: dict[str, Any]
    b: dict[str, Any]
    strata: dict[str, Any]
    n_pairs: int
    dropped: int
    a_only: int
    b_only: int
    rate_a: float
    rate_b: float
    diff: float
    diff_ci_low: float
    diff_ci_high: float
    diff_ci_method: str
    p_value: float
    test: str
    q_value: float
    cohens_h: float | None


@dataclass(frozen=True)
class StatsReport:
    """What `stats` and `compare` print; `as_json()` is the documented `--json` form."""

    metric: str
    kind: str
    groups: list[Group]
    comparisons: list[Comparison]
    compare: str | None
    q_method: str
    notes: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "kind": self.kind,
            "compare": self.compare,
            "groups": [asdict(g) for g in self.groups],
            "comparisons": [asdict(c) for c in self.comparisons],
            "q_method": self.q_method,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class StatsOptions:
    """How to analyse: the metric, strata, the comparison, the CI method, the seed."""

    metric: str | None = None
    by: Sequence[str] = ()
    compare: str | None = None
    ci_method: stats.ProportionMethod = "wilson"
    seed: int = 0
    resamples: int = 10_000


# -- reading records into cells ----------------------------------------------------


class _Reader:
    """Streams records into cells, coding item ids as ints as it goes."""

    def __init__(self, metric: Metric, by: Sequence[str]) -> None:
        self.metric, self.by = metric, list(by)
        self.cells: dict[tuple[str, str, str, str], _Cell] = {}
        self.item_codes: dict[str, int] = {}
        self.numeric = metric.kind == "numeric"
        self.seen_fields: set[str] = set()

    def read(self, run_id: str, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.add(run_id, record)

    def add(self, run_id: str, record: dict[str, Any]) -> None:
        strata = {name: self._stratum(name, record) for name in self.by}
        grid = record.get("grid") or {}
        key = (run_id, record["model"], _canon(grid), _canon(strata))
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = _Cell(run_id, record["model"], grid, strata)
        code = self.item_codes.setdefault(record["item_id"], len(self.item_codes))
        cell.keys.append(code << REPEAT_BITS | int(record.get("repeat") or 0))
        value = self.metric.value(record)
        if value is not None and not isinstance(value, bool):
            self.numeric = True
        cell.values.append(math.nan if value is None else float(value))

    def _stratum(self, name: str, record: dict[str, Any]) -> Any:
        head, _, rest = name.partition(".")
        if head == "item":
            item = record.get("item") or {}
            self.seen_fields.update(item)
            return item.get(rest)
        if head == "grid":
            return (record.get("grid") or {}).get(rest)
        return record.get(head)


def _canon(value: dict[str, Any]) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def check_by(by: Sequence[str]) -> None:
    for name in by:
        head, dot, rest = name.partition(".")
        if not ((head in ("item", "grid") and dot and rest) or name in ("model", "run")):
            raise UsageError(f"--by '{name}': give item.FIELD, grid.KEY or model")


def read_runs(runs: Sequence[Run], metric: Metric, by: Sequence[str]) -> _Reader:
    """Every committed record of `runs`, streamed from their stores into cells."""
    check_by(by)
    reader = _Reader(metric, by)
    for run in runs:
        with run.store() as store:
            reader.read(run.run_id, (orjson.loads(text) for text in store.records()))
    item_by = [n.partition(".")[2] for n in by if n.startswith("item.")]
    unknown = [f for f in item_by if f not in reader.seen_fields and reader.cells]
    if unknown:
        fields = ", ".join(sorted(reader.seen_fields)) or "none"
        raise UsageError(f"--by item.{unknown[0]}: no item has that field (fields: {fields})")
    return reader


# -- groups --------------------------------------------------------------------------


def _group(cell: _Cell, numeric: bool, method: stats.ProportionMethod) -> Group:
    values = _as_optional(cell.values)
    items = [key >> REPEAT_BITS for key in cell.keys]
    present = [v for v in values if v is not None]
    n, missing = len(present), len(values) - len(present)
    clustered = len({i for i, v in zip(items, values, strict=True) if v is not None}) < n
    successes = None if numeric else int(sum(present))
    if clustered and not numeric:
        ci = stats.clustered_proportion_ci(values, items)
        rate, low, high = ci.estimate, ci.low, ci.high
        ci_method = f"{ci.method}; design effect from Miller 2024's clustered SE"
    elif clustered or numeric:
        est = stats.mean_se(values, items=items if clustered else None)
        rate, low, high = est.mean, est.low, est.high
        ci_method = "clustered-se (items, Miller 2024)" if clustered else "normal, naive SE"
        if low is None:
            ci_method = est.method
        elif not numeric and high is not None:
            low, high = max(low, 0.0), min(high, 1.0)
            ci_method += ", normal interval clipped to [0, 1]"
    else:
        ci = stats.proportion_ci(successes or 0, n, method=method)
        rate, low, high, ci_method = ci.estimate, ci.low, ci.high, ci.method
        ci_method = "exact" if ci_method == "clopper-pearson" else ci_method
    return Group(
        run=cell.run, model=cell.model, grid=cell.grid, strata=cell.strata, n=n,
        missing=missing, successes=successes, rate=rate, ci_low=low, ci_high=high,
        ci_method=ci_method, items=len(set(items)),
    )  # fmt: skip


def _as_optional(values: array[float]) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values]


# -- comparisons ---------------------------------------------------------------------


def _side_and_context(cell: _Cell, compare: str) -> tuple[Any, tuple[Any, ...]]:
    """What a comparison sets against each other (the side) and what must match (the rest)."""
    strata = _canon(cell.strata)
    if compare == "model":
        return cell.model, (cell.run, _canon(cell.grid), strata)
    if compare == "run":
        return cell.run, (cell.model, _canon(cell.grid), strata)
    if compare == "run-model":  # runs of one model each: the model names the side
        return (cell.run, cell.model), (_canon(cell.grid), strata)
    name = compare.partition(".")[2]
    rest = {k: v for k, v in cell.grid.items() if k != name}
    return _canon({name: cell.grid.get(name)}), (cell.run, cell.model, _canon(rest), strata)


def _compare_cells(
    a: _Cell, b: _Cell, numeric: bool, options: StatsOptions
) -> stats.PairedComparison:
    index_b = {key: i for i, key in enumerate(b.keys)}
    matched = [(i, index_b[key]) for i, key in enumerate(a.keys) if key in index_b]
    if not matched:
        raise UsageError(
            f"no matched pairs between {_label(a)} and {_label(b)}: they share no item id "
            "and repeat"
        )
    try:
        if numeric:
            xs = [_number(a.values[i]) for i, _ in matched]
            ys = [_number(b.values[j]) for _, j in matched]
            resamples = min(options.resamples, 2_000)
            return stats.compare_paired_means(xs, ys, seed=options.seed, resamples=resamples)
        flags_a = [_flag(a.values[i]) for i, _ in matched]
        flags_b = [_flag(b.values[j]) for _, j in matched]
        items = [a.keys[i] >> REPEAT_BITS for i, _ in matched]
        return stats.compare_paired(
            flags_a, flags_b, clusters=items, seed=options.seed, resamples=options.resamples
        )
    except TrialrunError as exc:
        raise UsageError(f"{_label(a)} vs {_label(b)}: {exc}") from None


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _flag(value: float) -> bool | None:
    return None if math.isnan(value) else value == 1.0


def _label(cell: _Cell) -> str:
    parts = [cell.model, *(f"{k}={v}" for k, v in {**cell.grid, **cell.strata}.items())]
    return " ".join(str(p) for p in parts)


def _side(cell: _Cell, runs: bool) -> dict[str, Any]:
    side: dict[str, Any] = {"model": cell.model, "grid": cell.grid}
    if runs:
        side["run"] = cell.run
    return side


def _comparisons(reader: _Reader, options: StatsOptions, runs: bool) -> list[Comparison]:
    compare = options.compare
    if compare is None:
        return []
    contexts: dict[tuple[Any, ...], dict[Any, _Cell]] = {}
    for cell in reader.cells.values():
        side, context = _side_and_context(cell, compare)
        contexts.setdefault(context, {})[side] = cell
    pairs = [
        (a, b) for sides in contexts.values() for a, b in itertools.combinations(sides.values(), 2)
    ]
    if not pairs:
        shown = "run" if compare.startswith("run") else compare
        raise UsageError(f"--compare {shown}: only one value of {shown} here, nothing to compare")
    results = [_compare_cells(a, b, reader.numeric, options) for a, b in pairs]
    q = stats.adjust_p_values([r.p_value for r in results]).adjusted
    return [
        Comparison(
            a=_side(a, runs),
            b=_side(b, runs),
            strata=a.strata,
            n_pairs=r.n,
            dropped=r.dropped,
            a_only=r.a_only,
            b_only=r.b_only,
            rate_a=r.rate_a,
            rate_b=r.rate_b,
            diff=r.difference,
            diff_ci_low=r.low,
            diff_ci_high=r.high,
            diff_ci_method=r.ci_method,
            p_value=r.p_value,
            test=r.test,
            q_value=qv,
            cohens_h=r.cohens_h,
        )
        for (a, b), r, qv in zip(pairs, results, q, strict=True)
    ]


def _check_compare(compare: str | None, reader: _Reader) -> None:
    if compare is None or compare in ("model", "run", "run-model"):
        return
    head, dot, name = compare.partition(".")
    if head != "grid" or not dot:
        raise UsageError(f"--compare '{compare}': give model or grid.KEY")
    keys = {k for cell in reader.cells.values() for k in cell.grid}
    if name not in keys:
        raise UsageError(
            f"--compare {compare}: no grid key '{name}' (grid keys: {', '.join(sorted(keys)) or 'none'})"
        )


# -- the report ----------------------------------------------------------------------


def _report(reader: _Reader, metric: Metric, options: StatsOptions, runs: bool) -> StatsReport:
    if metric.kind == "binary" and reader.numeric:
        raise UsageError(f"metric '{metric.text}' has numbers, not true/false values")
    _check_compare(options.compare, reader)
    numeric = reader.numeric
    groups = [_group(cell, numeric, options.ci_method) for cell in reader.cells.values()]
    comparisons = _comparisons(reader, options, runs)
    notes = [MISSING_NOTE]
    if any("clustered" in g.ci_method for g in groups):
        notes.append(
            "items repeat within a group (repeats): a rate's CI is the Wilson interval at the "
            "effective n (n over the design effect of the standard error clustered by item, "
            "Miller 2024; Korn & Graubard 1998), a mean's the clustered SE's; binary "
            "comparisons resample items and use the clustered McNemar test (Durkalski 2003)"
        )
    return StatsReport(
        metric=metric.text, kind="numeric" if numeric else "binary", groups=groups,
        comparisons=comparisons, compare=options.compare,
        q_method="Benjamini-Hochberg q-values over every comparison shown", notes=notes,
    )  # fmt: skip


def run_stats(run: Run, options: StatsOptions) -> StatsReport:
    """`trialrun stats RUN`: groups of one run, and its comparisons when asked."""
    metric = parse_metric(options.metric, run.experiment())
    reader = read_runs([run], metric, options.by)
    return _report(reader, metric, options, runs=False)


def compare_runs(runs: Sequence[Run], options: StatsOptions) -> StatsReport:
    """`trialrun compare RUN_A RUN_B ...`: each run a side, matched by item id, grid
    values and repeat. Runs of one model each are compared across their models (the
    model labels each side); otherwise each model is compared with itself across runs."""
    if len(runs) < 2:
        raise UsageError("compare needs two runs or more (trialrun compare RUN_A RUN_B)")
    if len({run.run_id for run in runs}) < len(runs):
        raise UsageError("compare: the same run is named twice")
    metric = parse_metric(options.metric, runs[0].experiment())
    reader = read_runs(runs, metric, options.by)
    models = {r.run_id: {c.model for c in reader.cells.values() if c.run == r.run_id} for r in runs}
    one_model = all(len(found) == 1 for found in models.values())
    compare = "run-model" if one_model else "run"
    report = _report(reader, metric, replace(options, compare=compare), runs=True)
    how = (
        "each run has one model: sides are runs, labelled by model"
        if one_model
        else "sides are runs; each model is compared with itself across runs"
    )
    return replace(report, notes=[*report.notes, how])


def dumps(report: StatsReport) -> str:
    return json.dumps(report.as_json(), indent=2, allow_nan=False)
