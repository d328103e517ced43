"""What a report shows, read from a run: statistics (through `trialrun.analysis`, never
recomputed here), per-model usage and errors, scores, judges, agreement, provenance, and a
bounded sample of trials with their conversations.

Records are streamed once from the store for everything but the statistics (which stream
them again per metric, as `trialrun stats` does); only per-model counters and the sampled
trials are kept, so a 100,000-record run fits in little memory.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from trialrun.analysis import StatsOptions, StatsReport, run_stats
from trialrun.annotation.agreement import AgreementReport, agreement
from trialrun.config import Experiment
from trialrun.errors import TrialrunError
from trialrun.metrics import available
from trialrun.report.trials import TrialSampler
from trialrun.runs import Run

MAX_METRICS = 8
"""Metrics a report analyses at most (each is one more pass over the records)."""


@dataclass(frozen=True)
class ReportOptions:
    """What to put in a report: the metrics (default: every score and judge field, up to
    `MAX_METRICS`), the comparison (default: `model` with two models or more, else the
    first grid key with two values or more), the trial table's bound, the FDR that marks
    comparisons, the bootstrap's seed."""

    metrics: tuple[str, ...] = ()
    compare: str | None = None
    max_trials: int = 5_000
    fdr: float = 0.10
    seed: int = 0


@dataclass
class ModelUsage:
    """One model's trials: counts, tokens, cost, latency and its errors by message."""

    model: str
    done: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_unknown: int = 0
    retries: int = 0
    cache_hits: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, record: dict[str, Any]) -> None:
        turns = record.get("turns") or []
        if record.get("status") == "done":
            self.done += 1
        else:
            self.failed += 1
            self.errors[error_kind(record.get("error"))] += 1
        for turn in turns:
            usage = turn.get("usage") or {}
            self.input_tokens += int(usage.get("input") or 0)
            self.output_tokens += int(usage.get("output") or 0)
            self.cache_hits += bool(turn.get("cache_hit"))
        cost = record.get("cost_usd")
        if cost is None:
            self.cost_unknown += 1
        else:
            self.cost_usd += float(cost)
        self.retries += int(record.get("retries") or 0)
        if turns:
            self.latencies.append(sum(float(t.get("latency_s") or 0.0) for t in turns))

    def latency(self, q: float) -> float | None:
        """The q-quantile of per-trial latency (nearest rank), None without answered trials."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def error_kind(error: object) -> str:
    """A failed trial's error with the `turn N: ` prefix dropped, cut to 120 characters,
    so that the same failure on different turns counts once."""
    text = str(error or "unknown error")
    head, sep, rest = text.partition(": ")
    if sep and head.startswith("turn ") and head[5:].isdigit():
        text = rest
    return text if len(text) <= 120 else text[:119] + "…"


@dataclass
class ScoreTally:
    """One score's values over the done trials: true, false, numbers, null (with reasons)."""

    name: str
    true: int = 0
    false: int = 0
    numbers: int = 0
    null: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class ReportData:
    """Everything a report renders; `build_report` fills it."""

    run_id: str
    experiment: Experiment
    manifest: dict[str, Any]
    config_text: str
    counts: dict[str, int]
    summary: list[dict[str, Any]]
    stats: list[StatsReport]
    stats_notes: list[str]
    usage: dict[str, ModelUsage]
    scores: dict[str, ScoreTally]
    judges: list[dict[str, Any]]
    agreement: AgreementReport | None
    agreement_note: str
    trials: TrialSampler
    options: ReportOptions
    records: int = 0


def build_report(run: Run, options: ReportOptions | None = None) -> ReportData:
    """Read `run` into a `ReportData` (see the module doc)."""
    options = options or ReportOptions()
    experiment = run.experiment()
    counts = run.counts()
    sampler = TrialSampler(experiment, run.meta(), counts["done"] + counts["failed"], options)
    usage: dict[str, ModelUsage] = {}
    scores = {name: ScoreTally(name) for name in experiment.scores}
    records = 0
    with run.store() as store:
        for text in store.records():
            record = orjson.loads(text)
            records += 1
            model = record["model"]
            usage.setdefault(model, ModelUsage(model)).add(record)
            _tally_scores(scores, record)
            sampler.offer(record)
    stats, notes = _statistics(run, experiment, options)
    found, note = _agreement(run)
    return ReportData(
        run_id=run.run_id, experiment=experiment, manifest=_manifest(run),
        config_text=_read(run, "config.yaml"), counts=counts, summary=run.summary(),
        stats=stats, stats_notes=notes, usage=usage, scores=scores, judges=run.judges(),
        agreement=found, agreement_note=note, trials=sampler, options=options,
        records=records,
    )  # fmt: skip


def _tally_scores(scores: dict[str, ScoreTally], record: dict[str, Any]) -> None:
    values = record.get("scores") or {}
    reasons = record.get("score_errors") or {}
    for name, tally in scores.items():
        value = values.get(name)
        if value is True:
            tally.true += 1
        elif value is False:
            tally.false += 1
        elif isinstance(value, int | float):
            tally.numbers += 1
        else:
            tally.null += 1
            tally.reasons[str(reasons.get(name) or "no value")] += 1


def default_compare(experiment: Experiment) -> str | None:
    """`model` with two models or more, else the first grid key with two values or more."""
    if len(experiment.models) > 1:
        return "model"
    for key, values in experiment.grid.items():
        if len(values) > 1:
            return f"grid.{key}"
    return None


def _statistics(
    run: Run, experiment: Experiment, options: ReportOptions
) -> tuple[list[StatsReport], list[str]]:
    """One `run_stats` report per metric; a metric that cannot be analysed leaves a note."""
    metrics = list(options.metrics) or available(experiment)[:MAX_METRICS]
    notes = [] if metrics else ["no scores and no judges in this run: no rates to show"]
    compare = options.compare or default_compare(experiment)
    reports = []
    for metric in metrics:
        try:
            reports.append(run_stats(run, _stats_options(metric, compare, options)))
            continue
        except TrialrunError as exc:
            if options.metrics and not compare:
                raise
            reason = str(exc)
        try:  # without the comparison (e.g. no matched pairs), the groups still show
            reports.append(run_stats(run, _stats_options(metric, None, options)))
            notes.append(f"{metric}: no comparisons ({reason})")
        except TrialrunError as exc:
            if options.metrics:
                raise
            notes.append(f"{metric}: not analysed ({exc})")
    return reports, notes


def _stats_options(metric: str, compare: str | None, options: ReportOptions) -> StatsOptions:
    return StatsOptions(metric=metric, compare=compare, seed=options.seed)


def _agreement(run: Run) -> tuple[AgreementReport | None, str]:
    with run.store() as store:
        if not store.sheets():
            return None, "no annotation sheets: `trialrun annotate export` makes some"
    try:
        return agreement(run), ""
    except TrialrunError as exc:
        return None, str(exc)


def _manifest(run: Run) -> dict[str, Any]:
    try:
        found = json.loads(_read(run, "manifest.json") or "{}")
    except ValueError:
        return {"error": "manifest.json is not valid JSON"}
    return found if isinstance(found, dict) else {}


def _read(run: Run, name: str) -> str:
    try:
        return (run.path / name).read_text(encoding="utf-8")
    except OSError:
        return ""
