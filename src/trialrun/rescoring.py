"""`trialrun score`: add or recompute a finished run's scores without any model call.

The run's stored config with `scores.*` overrides applied is checked as a run's would be
(patterns compiled, templates against the first item, functions imported), then every
committed record is scored again; the records' `scores`/`score_errors` and the run's
stored config change in one transaction, and results.jsonl is rewritten from the store.
A mistake changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from trialrun.errors import UsageError
from trialrun.export import RESULTS_NAME, ResultsFile
from trialrun.loading import validate
from trialrun.overrides import apply_overrides
from trialrun.runs import Run, lock_run
from trialrun.scoring import Scorers, Value


@dataclass(frozen=True, slots=True)
class ScoreSummary:
    """One score over a run's records: counts of each verdict, or the mean of numbers."""

    name: str
    n: int
    true: int
    false: int
    null: int
    mean: float | None
    """The mean of the non-null values when any is a number (not a bool), else None."""


def score_run(target: Run, overrides: Sequence[str] = ()) -> list[ScoreSummary]:
    """Score every committed record of `target` with its stored `scores:` changed by
    `overrides` (`scores.NAME.KIND=VALUE`, or `scores.NAME={...}`); returns a summary."""
    for text in overrides:
        if not text.startswith("scores."):
            raise UsageError(f"'{text}': only scores.* can change on a finished run")
    meta = target.meta()
    experiment = validate(apply_overrides(meta["experiment"], list(overrides)), meta["source"])
    scorers = Scorers(experiment, meta["source"], meta["id_field"])
    lock = lock_run(target.path)  # not while another process runs it
    try:
        with target.store(readonly=False) as store:
            _check_first_item(scorers, store.items(), meta["id_field"])
            records = [json.loads(record) for record in store.records()]
            rows = [(record["trial_id"], _rescored(scorers, record)) for record in records]
            scores = {
                name: spec.model_dump(mode="json", exclude_defaults=True)
                for name, spec in experiment.scores.items()
            }
            stored = {**meta["experiment"], "scores": scores}
            store.replace_records(rows, {"experiment": stored, "scores": scores})
            ResultsFile(target.path / RESULTS_NAME).rewrite(store)
    finally:
        lock.close()
    return summarise(list(experiment.scores), records)


def _check_first_item(scorers: Scorers, items: dict[str, Any], id_field: str) -> None:
    for item_id, item in items.items():
        scorers.check_item({id_field: item_id, **item}, f"item '{item_id}'")
        return


def _rescored(scorers: Scorers, record: dict[str, Any]) -> str:
    """The record's JSON with its scores computed again (`record` is updated in place)."""
    record["scores"], record["score_errors"] = scorers.score(record)
    return orjson.dumps(record).decode()


def summarise(names: list[str], records: list[dict[str, Any]]) -> list[ScoreSummary]:
    """Counts per score name over `records` (their `scores` as they are now)."""
    return [_summary(name, [(r.get("scores") or {}).get(name) for r in records]) for name in names]


def _summary(name: str, values: list[Value]) -> ScoreSummary:
    known = [v for v in values if v is not None]
    numeric = any(not isinstance(v, bool) for v in known)
    mean = sum(float(v) for v in known) / len(known) if numeric and known else None
    return ScoreSummary(
        name,
        len(values),
        sum(1 for v in known if v is True),
        sum(1 for v in known if v is False),
        len(values) - len(known),
        mean,
    )
