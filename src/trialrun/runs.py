"""Run folders: creating one whole or not at all, finding them, reading them, locking them.

A run folder holds the run's database (the store), `config.yaml`, `manifest.json` and
`results.jsonl`. `create_run` writes it under a temporary name and renames it, so a
crash never leaves half a run; `Run` reads it; `lock_run` lets one process at a time
execute it. Executing runs is `running`'s business.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from trialrun import __version__
from trialrun.config import Experiment
from trialrun.errors import ConfigError, RunNotFoundError, StoreError
from trialrun.executor.judge import spec_hash
from trialrun.export import RESULTS_NAME, records_frame
from trialrun.hashing import content_hash
from trialrun.integrity import count_flagged
from trialrun.loading import Prepared
from trialrun.provenance import git_state, manifest, source_files, template_hashes
from trialrun.providers import registry
from trialrun.store import DB_NAME, Store, utcnow
from trialrun.sync import read_state


class Run:
    """A run folder: its store, records and status."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_id = path.name

    def store(self, *, readonly: bool = True) -> Store:
        """The run's database; `with run.store() as store:` closes it after use."""
        return Store(self.path / DB_NAME, readonly=readonly)

    def meta(self) -> dict[str, Any]:
        with self.store() as store:
            return store.meta()

    def created_at(self) -> str:
        """When the run folder was created (ISO 8601 UTC, milliseconds)."""
        try:
            manifest_json = json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))
            return str(manifest_json["created_at"])
        except (OSError, ValueError, KeyError):
            return str(self.meta()["created_at"])

    def experiment(self) -> Experiment:
        return Experiment.model_validate(self.meta()["experiment"])

    def counts(self) -> dict[str, int]:
        with self.store() as store:
            return store.counts()

    def records(self) -> Iterator[dict[str, Any]]:
        with self.store() as store:
            for record in store.records():
                yield json.loads(record)

    def summary(self) -> list[dict[str, Any]]:
        with self.store() as store:
            return store.summary()

    def to_pandas(self) -> Any:
        """The committed records as a pandas DataFrame: one row a trial, the columns of
        `trialrun export --format parquet` (scores and verdicts among them). Needs pandas:
        pip install 'trialrun[parquet]'."""
        with self.store() as store:
            return records_frame(store)

    def is_running(self) -> bool:
        return locked_by_other(self.path)

    def status(self) -> dict[str, Any]:
        with self.store() as store:
            counts = store.counts()
            left = counts["pending"] + counts["running"]
            rate = store.recent_rate()
            running = self.is_running()
            meta = store.meta()
            experiment = Experiment.model_validate(meta["experiment"])
            return {
                "run_id": self.run_id,
                "path": str(self.path),
                "counts": counts,
                "total": sum(counts.values()),
                "spend": store.spend(),
                "running": running,
                "pid": owner_pid(self.path) if running else None,
                "sync": read_state(self.path),
                "live": meta.get("live") if running else None,
                "rate_per_s": rate,
                "eta_s": left / rate if rate > 0 and left else None,
                "events": store.events(10),
                "mode": meta.get("mode", "realtime"),
                "batches": store.batches(),
                "missing_logprobs": store.missing_logprobs(),
                "judges": judge_status(store, experiment),
                "scores": store.score_counts(list(experiment.scores)),
                "gate": meta.get("gate"),
                "canaries": count_flagged(store.records())
                if experiment.integrity.canaries
                else None,
                "budget": None
                if experiment.budget is None
                else {
                    "max_usd": experiment.budget.max_usd,
                    "warn_at": experiment.budget.warn_at,
                    "spent_usd": store.total_spend(),
                },
            }

    def judges(self) -> list[dict[str, Any]]:
        """Per judge of the run's config: verdicts, errors (and their kinds), trials left to
        judge, calls and cost (see `judge_status`)."""
        with self.store() as store:
            return judge_status(store, self.experiment())

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def judge_status(store: Store, experiment: Experiment) -> list[dict[str, Any]]:
    """Each judge of `experiment` (its current spec): name, model, when, verdicts, errors by
    kind, done trials it has not judged yet, calls, tokens and cost; judgments under a spec
    no judge of the config has now are counted apart (`other_specs`)."""
    counts = store.judge_counts()
    done = store.done_records()
    out = []
    for judge in experiment.judges():
        key = (judge.label, spec_hash(judge))
        tally = counts.get(key, {})
        verdicts, errors = tally.get("verdicts") or 0, tally.get("errors") or 0
        out.append(
            {
                "name": judge.label,
                "model": judge.model,
                "when": judge.when,
                "spec_hash": key[1],
                "verdicts": verdicts,
                "errors": errors,
                "error_kinds": store.judge_error_kinds(*key) if errors else {},
                "to_judge": max(done - verdicts - errors, 0),
                "calls": tally.get("calls") or 0,
                "input_tokens": tally.get("input_tokens") or 0,
                "output_tokens": tally.get("output_tokens") or 0,
                "cost_usd": tally.get("cost_usd"),
                "cost_unknown": tally.get("cost_unknown") or 0,
                "other_specs": sum(
                    (c["verdicts"] or 0) + (c["errors"] or 0)
                    for (name, spec), c in counts.items()
                    if name == judge.label and spec != key[1]
                ),
            }
        )
    return out


def open_run(ref: str | Path | None = None, runs_dir: str | Path = "runs") -> Run:
    """A run by folder path, by id (folder name) under `runs_dir`, or the latest when None."""
    base = Path(runs_dir)
    if ref is None:
        found = list_runs(base)
        if not found:
            raise RunNotFoundError(
                f"{base}: no runs here yet; start one with `trialrun run CONFIG`"
            )
        return found[-1]
    try:
        for candidate in (Path(ref), base / str(ref)):
            if (candidate / DB_NAME).is_file():
                return Run(candidate)
    except (OSError, ValueError):  # not even a possible path (too long, a NUL byte)
        raise RunNotFoundError(f"{str(ref)[:80]}...: not a run folder or id") from None
    matches = [r for r in list_runs(base) if r.run_id.startswith(str(ref))]
    if len(matches) == 1:
        return matches[0]
    if Path(ref).is_dir():
        raise RunNotFoundError(f"{ref}: not a run folder (no {DB_NAME} in it)")
    raise RunNotFoundError(f"{ref}: no such run (looked for a folder, and for an id under {base})")


def list_runs(base: Path) -> list[Run]:
    """Runs under a folder, oldest first (by the timestamp in their names)."""
    if not base.is_dir():
        return []
    runs = [
        Run(p) for p in base.iterdir() if not p.name.startswith(".") and (p / DB_NAME).is_file()
    ]
    return sorted(runs, key=lambda r: (r.created_at(), r.run_id))


def create_run(prepared: Prepared, runs_dir: Path | None = None) -> Run:
    """Write a new run folder whole (database, config, manifest) or not at all."""
    experiment = prepared.experiment
    base = runs_dir or Path(experiment.output.dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id = f"{experiment.name}-{stamp}-{secrets.token_hex(2)}"
    final, tmp = base / run_id, base / f".{run_id}.tmp"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission, a name too long: the config's
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        named = f"{prepared.source}: output.dir" if runs_dir is None else "runs folder"
        what = f"cannot be created ({exc.strerror})"
        what = "is a file, not a folder" if base.is_file() else what
        raise ConfigError(f"{named} '{base}' {what}; name a folder for run folders") from None
    try:
        tmp.mkdir()
        _fill_run_folder(prepared, run_id, tmp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(final)


def create_runs(prepared: Sequence[Prepared]) -> list[Run]:
    """A run folder for each prepared experiment (its items are released once stored)."""
    runs = []
    for p in prepared:
        runs.append(create_run(p))
        p.dataset.release()
    return runs


def _fill_run_folder(prepared: Prepared, run_id: str, folder: Path) -> None:
    """The run folder's files: the store with items and planned trials, then config.yaml,
    manifest.json and an empty results file."""
    experiment = prepared.experiment
    meta = _run_meta(prepared, run_id)
    with Store.create(folder / DB_NAME) as store:
        store.set_meta(meta)
        store.add_items(prepared.dataset.encoded())
        lanes = {m.label: registry.lane(m.provider, m.label) for m in experiment.models}
        trials = prepared.trials()  # `prepared.progress` hears how far it got
        planned = store.add_trials((trial, lanes[trial.model]) for trial in trials)
        store.set_meta({"planned_trials": planned})
        for warning in prepared.warnings:  # kept with the run, whatever the display showed
            store.add_event("warning", warning)
        store.flush()
    (folder / "config.yaml").write_text(
        yaml.safe_dump(meta["experiment"], sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    provenance = manifest(
        run_id=run_id,
        created_at=meta["created_at"],
        seed=experiment.seed,
        hashes=meta["hashes"],
        mock=prepared.mock,
        shard=meta["shard"],
        limit=prepared.limit,
        sample=prepared.dataset.sampling,
        source=prepared.source,
        git=git_state(prepared.base_dir),
        files=source_files(experiment, prepared.source, prepared.base_dir, prepared.prompt_files),
        templates=template_hashes(experiment),
        trialrun_version=__version__,
    )
    (folder / "manifest.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    (folder / RESULTS_NAME).touch()


def _run_meta(prepared: Prepared, run_id: str) -> dict[str, Any]:
    """What the store keeps about the run: enough to resume it without the config file."""
    experiment = prepared.experiment
    experiment_json = experiment.model_dump(mode="json", by_alias=True)
    return {
        "run_id": run_id,
        "experiment": experiment_json,
        "source": prepared.source,
        "overrides": prepared.overrides,
        "mock": prepared.mock,
        "id_field": experiment.dataset.id,
        "shard": str(prepared.shard) if prepared.shard else None,
        "limit": prepared.limit,
        "created_at": utcnow(),
        "hashes": {
            "config": content_hash(experiment_json),
            "data": prepared.dataset.content_hash(),
        },
        "mode": experiment.mode,
    }


# ------------------------------------------------------------------ locking


class RunBusy(StoreError):
    """Another process holds the run's lock."""


OWNER_NAME = "run.lock"
"""Names the process that holds a run (its pid), for messages only: the lock itself is on
the database file, which cannot be removed without removing the run."""


def lock_run(folder: Path) -> BinaryIO:
    """Hold the run's lock: an exclusive flock on its database file for as long as the
    returned handle stays open. SQLite's own locks are POSIX record locks, which flock
    neither sees nor disturbs; the lock dies with the process, so a crash never leaves it
    held, and deleting `run.lock` (or any other file) cannot defeat it."""
    handle = (folder / DB_NAME).open("rb")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunBusy(
            f"{folder}: this run is already running ({_owner(folder)}); wait for it "
            "or stop that process first"
        ) from None
    with contextlib.suppress(OSError):  # informational only
        (folder / OWNER_NAME).write_text(str(os.getpid()), encoding="utf-8")
    return handle


def _owner(folder: Path) -> str:
    """Who holds the lock, for the message: `pid 123` as `run.lock` says, if it says."""
    pid = owner_pid(folder)
    return f"pid {pid}" if pid is not None else "another process"


def owner_pid(folder: Path) -> int | None:
    """The pid `run.lock` names (the last process to take the run's lock), if it names one."""
    try:
        pid = (folder / OWNER_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(pid) if pid.isdigit() else None


def locked_by_other(folder: Path) -> bool:
    """Whether another process holds the run's lock (it is executing the run now)."""
    try:
        handle = (folder / DB_NAME).open("rb")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
