"""Merging shard runs (`--shard I/N` on a job array) into one run folder, by trial id.

The shards must be runs of one experiment on one dataset (the same config less `output`,
and the same `hashes.data`; the shard itself lives outside the experiment). The merged run holds the
union of their items, trials, attempts, records and judgments; a trial recorded in two
shards keeps the first shard's record, and counts as *conflicting* when the two differ
in more than their run-specific fields (run id, times, latencies, cache hits). Planned
trials (the whole experiment, unsharded) with a record in no shard are *missing*.
Batch tables stay with the shards: their jobs belong to the runs that submitted them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trialrun.config import Experiment
from trialrun.errors import ConfigError
from trialrun.export import RESULTS_NAME, ResultsFile
from trialrun.hashing import content_hash
from trialrun.plan import expand
from trialrun.runs import Run, open_run
from trialrun.store import DB_NAME, Store, utcnow
from trialrun.store.copying import (
    empty_copy,
    item_ids,
    merge_into,
    overlapping_records,
    recorded_ids,
)
from trialrun.sync import fetch_run, is_url

RUN_SPECIFIC = frozenset({"run_id", "started_at", "finished_at", "elapsed_s", "retries"})
TURN_SPECIFIC = frozenset({"latency_s", "cache_hit", "attempts", "request_id"})


@dataclass
class MergeReport:
    """What `merge_runs` did: the new run, and what it found."""

    run: Run
    shards: list[str]
    taken: list[int]
    """Trials taken from each shard, in order."""
    planned: int
    recorded: int
    missing: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)


def merge_runs(
    refs: Sequence[str | Path | Run], into: str | Path, runs_dir: str | Path = "runs"
) -> MergeReport:
    """Merge shard runs (folders, ids or sync URLs) into a new run folder `into`, written
    whole or not at all (a bare name goes under `runs_dir`)."""
    if len(refs) < 1:
        raise ConfigError("merge: name the shard runs to merge")
    dest = _destination(into, runs_dir)
    with tempfile.TemporaryDirectory(prefix="trialrun-merge-") as fetched:
        sources = [_source(ref, runs_dir, Path(fetched)) for ref in refs]
        metas = [s.meta() for s in sources]
        _check_same_experiment(sources, metas)
        tmp = dest.parent / f".{dest.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        try:
            report = _merge(sources, metas, tmp, dest)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return report


def _destination(into: str | Path, runs_dir: str | Path) -> Path:
    path = Path(into)
    if len(path.parts) == 1 and not path.is_absolute():
        path = Path(runs_dir) / path
    if path.exists():
        raise ConfigError(f"--into {into}: {path} exists already; name a new run folder")
    return path


def _source(ref: str | Path | Run, runs_dir: str | Path, fetched: Path) -> Run:
    if isinstance(ref, Run):
        return ref
    if is_url(ref):
        return Run(fetch_run(str(ref), fetched / str(len(list(fetched.iterdir())))))
    return open_run(ref, runs_dir)


def _check_same_experiment(sources: list[Run], metas: list[dict[str, Any]]) -> None:
    """Refuse shards of different configs or datasets, naming the first that differs. The
    config is compared less `output` (where each shard wrote and synced to) and `executor`
    (where its local models ran)."""
    first = _identity(metas[0])
    for source, meta in zip(sources[1:], metas[1:], strict=True):
        identity = _identity(meta)
        for key, what in (("config", "config"), ("data", "dataset")):
            if identity[key] != first[key]:
                raise ConfigError(
                    f"merge: {source.path} is a run of a different {what} than "
                    f"{sources[0].path}; merge only the shards of one experiment"
                )


def _identity(meta: dict[str, Any]) -> dict[str, Any]:
    experiment = {k: v for k, v in meta["experiment"].items() if k not in ("output", "executor")}
    return {"config": content_hash(experiment), "data": meta.get("hashes", {}).get("data")}


def _merge(sources: list[Run], metas: list[dict[str, Any]], tmp: Path, dest: Path) -> MergeReport:
    db = tmp / DB_NAME
    empty_copy(sources[0].path / DB_NAME, db)
    taken, conflicting = [], []
    for source in sources:
        for trial_id, kept, other in overlapping_records(db, source.path / DB_NAME):
            if _comparable(kept) != _comparable(other):
                conflicting.append(trial_id)
        taken.append(merge_into(db, source.path / DB_NAME))
    experiment = Experiment.model_validate(metas[0]["experiment"])
    with Store(db) as store:
        planned = [t.trial_id for t in expand(experiment, item_ids(store.conn))]
        recorded = recorded_ids(store.conn)
        shards = [str(m["run_id"]) for m in metas]
        store.set_meta(
            {
                "run_id": dest.name,
                "shard": None,
                "limit": None,
                "created_at": utcnow(),
                "planned_trials": len(planned),
                "merged_from": shards,
            }
        )
        store.add_event("merge", f"merged from {', '.join(shards)}")
        store.flush()
        ResultsFile(tmp / RESULTS_NAME).rewrite(store)
    _write_side_files(sources[0].path, tmp, dest.name, shards)
    return MergeReport(
        run=Run(dest),
        shards=shards,
        taken=taken,
        planned=len(planned),
        recorded=len(recorded),
        missing=[tid for tid in planned if tid not in recorded],
        conflicting=sorted(set(conflicting)),
    )


def _comparable(record_json: str) -> Any:
    """A record less what differs between two executions of the same trial."""
    record = json.loads(record_json)
    for key in RUN_SPECIFIC:
        record.pop(key, None)
    for turn in record.get("turns") or []:
        for key in TURN_SPECIFIC:
            turn.pop(key, None)
    return record


def _write_side_files(first: Path, tmp: Path, run_id: str, shards: list[str]) -> None:
    """config.yaml as the first shard's; manifest.json as its, renamed, naming the shards."""
    if (first / "config.yaml").is_file():
        shutil.copyfile(first / "config.yaml", tmp / "config.yaml")
    try:
        manifest = json.loads((first / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    manifest.update({"run_id": run_id, "shard": None, "merged_from": shards})
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
