"""What a pilot run tells a power analysis: the rate, the discordant-pair fraction and the
paired difference between its models (or grid values), the measured cost of a unit, and
the variance components of the metric when its items repeat.

A *unit* is one item × repeat; its cost is what the pilot paid for it over every model ×
grid cell it ran (the records' `cost_usd` summed, over the distinct (item, repeat)).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from trialrun.analysis import REPEAT_BITS, StatsOptions, read_runs, run_stats
from trialrun.errors import UsageError
from trialrun.metrics import parse_metric
from trialrun.power import VarianceComponents, variance_components
from trialrun.runs import Run


@dataclass(frozen=True)
class Pilot:
    """A pilot run's estimates (None where the run cannot tell)."""

    run_id: str
    metric: str
    rate: float | None
    discordance: float | None
    """(a_only + b_only) / pairs, pooled over the run's comparisons."""
    effect: float | None
    """The mean |a - b| over the comparisons, weighted by their pairs."""
    pairs: int
    units: int
    cells: int
    cost_per_unit: float | None
    """None when no record has a cost (a mock run costs 0: also None)."""
    components: VarianceComponents | None
    """Between- and within-item variance, when items repeat in a cell."""


def read_pilot(run: Run, metric: str | None = None, compare: str = "model") -> Pilot:
    """The pilot's rate, discordance, effect, unit cost and variance components."""
    report = run_stats(run, StatsOptions(metric=metric, resamples=200))
    if report.kind != "binary":
        raise UsageError(f"power needs a binary metric; '{report.metric}' has numbers")
    n = sum(g.n for g in report.groups)
    successes = sum(g.successes or 0 for g in report.groups)
    pairs, discordant, effect = 0, 0, 0.0
    if len({_side(g.model, g.grid, compare) for g in report.groups}) > 1:
        compared = run_stats(run, StatsOptions(metric=metric, compare=compare, resamples=200))
        for c in compared.comparisons:
            pairs += c.n_pairs
            discordant += c.a_only + c.b_only
            effect += abs(c.diff) * c.n_pairs
    units, cost = _units_and_cost(run)
    return Pilot(
        run_id=run.run_id,
        metric=report.metric,
        rate=successes / n if n else None,
        discordance=discordant / pairs if pairs and discordant else None,
        effect=effect / pairs if pairs else None,
        pairs=pairs,
        units=units,
        cells=len(report.groups),
        cost_per_unit=cost / units if units and cost > 0 else None,
        components=_components(run, metric),
    )


def _side(model: str, grid: dict[str, object], compare: str) -> object:
    return model if compare == "model" else grid.get(compare.partition(".")[2])


def _units_and_cost(run: Run) -> tuple[int, float]:
    units: set[tuple[str, int]] = set()
    cost = 0.0
    with run.store() as store:
        for text in store.records():
            record = orjson.loads(text)
            units.add((record["item_id"], int(record.get("repeat") or 0)))
            cost += float(record.get("cost_usd") or 0.0)
    return len(units), cost


def _components(run: Run, metric: str | None) -> VarianceComponents | None:
    """Variance components over every cell: values centred on their cell's mean, each
    (cell, item) a cluster; None when no item repeats within a cell."""
    reader = read_runs([run], parse_metric(metric, run.experiment()), ())
    values: list[float] = []
    clusters: list[tuple[int, int]] = []
    for index, cell in enumerate(reader.cells.values()):
        kept = [
            (k >> REPEAT_BITS, v) for k, v in zip(cell.keys, cell.values, strict=True) if v == v
        ]
        if not kept:
            continue
        mean = sum(v for _, v in kept) / len(kept)
        values += [v - mean for _, v in kept]
        clusters += [(index, item) for item, _ in kept]
    if len(set(clusters)) in (0, len(clusters)) or len(set(clusters)) < 2:
        return None
    return variance_components(values, clusters)
