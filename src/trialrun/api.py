"""The Python API under the CLI: load, plan, run, resume and open runs."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from trialrun.config import (
    Experiment,
    apply_overrides,
    config_warnings,
    expand_multirun,
    read_yaml,
    validate,
)
from trialrun.dataset import Dataset, load_dataset
from trialrun.errors import ConfigError, RunIncomplete, RunNotFoundError, StoreError
from trialrun.executor.batch import (
    CollectReport,
    check_batch_support,
    collect_runs,
    leave_batches,
)
from trialrun.executor.cache import ResponseCache, cache_dir
from trialrun.executor.realtime import execute
from trialrun.executor.trial import ExperimentRun
from trialrun.export import RESULTS_NAME, ResultsFile
from trialrun.hashing import content_hash
from trialrun.plan import Shard, cell_count, count_trials, expand
from trialrun.provenance import git_state, manifest
from trialrun.routing import ModelCheck, build_routes, check_models, collapse_warnings
from trialrun.sandbox import signals_stop_renders
from trialrun.store import DB_NAME, Store, utcnow
from trialrun.templates import Conversation
from trialrun.types import Trial

ConfigSource = str | Path | dict[str, Any]


class Interrupted(RunIncomplete):
    """The run was stopped by a signal (Ctrl-C, SIGTERM)."""

    exit_code = 130


HUGE_PLAN = 1_000_000
"""Above this many trials, loading warns with the count and the room the run will take."""
TRIAL_ROW_BYTES = 150
"""A planned trial's row in the store (measured: 300k trials, 42.7 MB)."""
DONE_TRIAL_BYTES = 2_800
"""A finished trial with a short answer: store rows and results.jsonl (measured: 6,000
one-turn mock trials, 16.6 MB); long answers take more."""
PROGRESS_EVERY = 10_000
"""`Prepared.progress` hears about every this many trials."""

Progress = Callable[[int, bool], None]
"""Told (trials so far, finished) while a plan's trials are counted or written."""


@dataclass
class Prepared:
    """A config that passed every check, ready to become a run; nothing written yet."""

    experiment: Experiment
    source: str
    base_dir: Path
    dataset: Dataset
    conversation: Conversation
    mock: bool = False
    shard: Shard | None = None
    limit: int | None = None
    overrides: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What deserves a look before running (printed as `warning: ...` by `plan` and `run`)."""
    models: ModelCheck = field(default_factory=ModelCheck)
    """Keys a real run needs, and each model's provider built offline (see `check_models`)."""
    progress: Progress | None = None
    """Set by a display to show the trials being counted or written (a plan can be huge)."""
    _by_model: dict[str, int] | None = field(default=None, repr=False)

    @property
    def expected_trials(self) -> int:
        """The trial count without walking the plan: exact unless sharded (then 1/N of all)."""
        total = count_trials(self.experiment, len(self.dataset))
        if self.shard is not None:
            total = -(-total // self.shard.count)
        return total if self.limit is None else min(total, self.limit)

    @property
    def trial_count(self) -> int:
        return sum(self.trials_by_model().values())

    def trials_by_model(self) -> dict[str, int]:
        """Trials per model label: multiplied out, or with a shard or limit, counted by walking
        the plan once (memory stays flat; `progress` hears how far it got)."""
        if self._by_model is None:
            labels = [m.label for m in self.experiment.models]
            if self.shard is None and self.limit is None:
                each = self.expected_trials // len(labels)
                self._by_model = dict.fromkeys(labels, each)
            else:
                self._by_model = dict.fromkeys(labels, 0)
                for trial in self.trials():
                    self._by_model[trial.model] += 1
        return dict(self._by_model)

    def trials(self) -> Iterator[Trial]:
        """The planned trials in order, made as they are read; `progress` hears how many."""
        done = 0
        for trial in expand(self.experiment, self.dataset.ids, self.shard, self.limit):
            yield trial
            done += 1
            if self.progress is not None and done % PROGRESS_EVERY == 0:
                self.progress(done, False)
        if self.progress is not None:
            self.progress(done, True)


def load(
    config: ConfigSource,
    overrides: Sequence[str] = (),
    *,
    mock: bool = False,
    shard: Shard | str | None = None,
    limit: int | None = None,
    need_keys: bool = True,
) -> Prepared:
    """Read and check a config, its overrides, dataset and templates; raise one clear error.

    `need_keys=False` (`plan`) reads no key: the ones a real run needs are listed in
    `Prepared.models.keys` instead, set or not."""
    if isinstance(config, dict):
        raw, source, base_dir = config, "config", Path.cwd()
    else:
        path = Path(config)
        raw, source, base_dir = read_yaml(path), str(path), path.resolve().parent
    experiment = validate(apply_overrides(raw, list(overrides)), source)
    checked = check_models(experiment, mock, source, need_keys=need_keys)
    conversation = Conversation(experiment, source)
    conversation.check_names()
    dataset = load_dataset(experiment.dataset, base_dir, source, conversation.check_item)
    if isinstance(shard, str):
        shard = Shard.parse(shard)
    prepared = Prepared(
        experiment, source, base_dir, dataset, conversation, mock, shard, limit, list(overrides)
    )
    prepared.models = checked
    prepared.warnings = _warnings(prepared)
    return prepared


def _warnings(prepared: Prepared) -> list[str]:
    experiment, checked = prepared.experiment, prepared.models
    read = set().union(*(t.names for t in prepared.conversation.templates()))
    warnings = [*config_warnings(experiment), *checked.warnings]
    warnings += collapse_warnings(experiment, checked.unsent, read)
    trials = prepared.expected_trials
    if trials > HUGE_PLAN:
        warnings.append(
            f"{experiment.name}: {trials:,} trials; writing the plan takes about "
            f"{_size(trials * TRIAL_ROW_BYTES)} before any call, and the finished run about "
            f"{_size(trials * DONE_TRIAL_BYTES)} (more with long answers); --limit N or "
            "--shard I/N runs a part"
        )
    return warnings


def _size(size: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:,.1f} {unit}".replace(".0 ", " ")
        size /= 1000
    return f"{size:,.1f} TB"


def load_many(
    configs: Sequence[ConfigSource],
    overrides: Sequence[str] = (),
    *,
    multirun: bool = False,
    **options: Any,
) -> list[Prepared]:
    """Several configs, or one config swept over comma-separated override values."""
    combos = expand_multirun(list(overrides)) if multirun else [list(overrides)]
    return [load(config, combo, **options) for config in configs for combo in combos]


def plan_summary(prepared: Prepared) -> dict[str, Any]:
    experiment = prepared.experiment
    by_model = prepared.trials_by_model()
    trials = sum(by_model.values())
    return {
        "name": experiment.name,
        "items": len(prepared.dataset),
        "models": [m.label for m in experiment.models],
        "cells": cell_count(experiment.grid),
        "repeats": experiment.repeats,
        "turns": experiment.turn_count(),
        "trials": trials,
        "requests": trials * experiment.turn_count(),
        "trials_per_model": by_model,
    }


# ------------------------------------------------------------------ run folders


class Run:
    """A run folder: its store, records and status."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_id = path.name

    def store(self, *, readonly: bool = True) -> Store:
        return Store(self.path / DB_NAME, readonly=readonly)

    def meta(self) -> dict[str, Any]:
        store = self.store()
        try:
            return store.meta()
        finally:
            store.close()

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
        store = self.store()
        try:
            return store.counts()
        finally:
            store.close()

    def records(self) -> Iterator[dict[str, Any]]:
        store = self.store()
        try:
            for record in store.records():
                yield json.loads(record)
        finally:
            store.close()

    def summary(self) -> list[dict[str, Any]]:
        store = self.store()
        try:
            return store.summary()
        finally:
            store.close()

    def is_running(self) -> bool:
        return _locked_by_other(self.path)

    def status(self) -> dict[str, Any]:
        store = self.store()
        try:
            counts = store.counts()
            left = counts["pending"] + counts["running"]
            rate = store.recent_rate()
            running = self.is_running()
            meta = store.meta()
            return {
                "run_id": self.run_id,
                "path": str(self.path),
                "counts": counts,
                "total": sum(counts.values()),
                "spend": store.spend(),
                "running": running,
                "live": meta.get("live") if running else None,
                "rate_per_s": rate,
                "eta_s": left / rate if rate > 0 and left else None,
                "events": store.events(10),
                "mode": meta.get("mode", "realtime"),
                "batches": store.batches(),
                "missing_logprobs": store.missing_logprobs(),
            }
        finally:
            store.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


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


def _fill_run_folder(prepared: Prepared, run_id: str, folder: Path) -> None:
    experiment = prepared.experiment
    id_field = experiment.dataset.id
    experiment_json = experiment.model_dump(mode="json")
    hashes = {"config": content_hash(experiment_json), "data": prepared.dataset.content_hash()}
    meta = {
        "run_id": run_id,
        "experiment": experiment_json,
        "source": prepared.source,
        "overrides": prepared.overrides,
        "mock": prepared.mock,
        "id_field": id_field,
        "shard": str(prepared.shard) if prepared.shard else None,
        "limit": prepared.limit,
        "created_at": utcnow(),
        "hashes": hashes,
        "mode": experiment.mode,
    }
    store = Store.create(folder / DB_NAME)
    try:
        store.set_meta(meta)
        store.add_items(prepared.dataset.encoded())
        lanes = {m.label: m.provider for m in experiment.models}
        trials = prepared.trials()  # `prepared.progress` hears how far it got
        store.add_trials((trial, lanes[trial.model]) for trial in trials)
    finally:
        store.close()
    (folder / "config.yaml").write_text(
        yaml.safe_dump(experiment_json, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    provenance = manifest(
        run_id=run_id,
        created_at=meta["created_at"],
        seed=experiment.seed,
        hashes=hashes,
        mock=prepared.mock,
        shard=meta["shard"],
        limit=prepared.limit,
        source=prepared.source,
        git=git_state(prepared.base_dir),
    )
    (folder / "manifest.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    (folder / RESULTS_NAME).touch()


# ------------------------------------------------------------------ running


class Observer:
    """What the API tells a display while runs go; the default shows nothing."""

    def started(self, run: Run, total: int, finished: int) -> None: ...

    def committed(self, run: Run, done: int, failed: int) -> None: ...

    def warn(self, message: str) -> None: ...

    def waiting(self, run: Run, lane: str, seconds: float, note: str) -> None:
        """A lane of `run` waits `seconds` before its next request (a server's Retry-After)."""

    def collected(self, run: ExperimentRun, report: CollectReport) -> None:
        """A batch-mode collect pass over `run` ended; its notes are warnings."""
        for note in report.notes:
            self.warn(note)

    def finished(self) -> None: ...


def run(
    config: ConfigSource,
    overrides: Sequence[str] = (),
    *,
    mock: bool = False,
    shard: Shard | str | None = None,
    limit: int | None = None,
    observer: Observer | None = None,
    wait: bool = False,
) -> Run:
    """Run one experiment to the end and return its run folder.

    In batch mode (`mode: batch`) it submits the first stage and returns, unless `wait`:
    then it collects until the run is finished."""
    prepared = load(config, overrides, mock=mock, shard=shard, limit=limit)
    return run_prepared([prepared], observer, wait=wait)[0]


async def arun(
    config: ConfigSource,
    overrides: Sequence[str] = (),
    *,
    mock: bool = False,
    shard: Shard | str | None = None,
    limit: int | None = None,
    observer: Observer | None = None,
    wait: bool = False,
) -> Run:
    """`run` for async code and notebooks: `run = await trialrun.arun("exp.yaml")`."""
    prepared = load(config, overrides, mock=mock, shard=shard, limit=limit)
    runs = create_runs([prepared])
    await _aexecute(runs, observer or Observer(), wait=wait)
    return runs[0]


async def aresume(
    ref: str | Path | Run | None = None,
    *,
    retry_failed: bool = False,
    runs_dir: str | Path = "runs",
    observer: Observer | None = None,
    mode: str | None = None,
    wait: bool = False,
) -> Run:
    """`resume` for async code and notebooks: `await trialrun.aresume(run)`."""
    target = ref if isinstance(ref, Run) else open_run(ref, runs_dir)
    if mode is not None and mode not in ("realtime", "batch"):
        raise ConfigError(f"mode={mode}: expected mode=realtime or mode=batch")
    await _aexecute(
        [target], observer or Observer(), retry_failed=retry_failed, mode=mode, wait=wait
    )
    return target


def run_prepared(
    prepared: Sequence[Prepared], observer: Observer | None = None, *, wait: bool = False
) -> list[Run]:
    """Create a run folder for each prepared experiment and run them all in this process.

    Each `Prepared` is consumed: its items are released once they are in the run's store,
    so memory does not hold the dataset twice.
    """
    runs = create_runs(prepared)
    _execute(runs, observer or Observer(), wait=wait)
    return runs


def create_runs(prepared: Sequence[Prepared]) -> list[Run]:
    """A run folder for each prepared experiment (its items are released once stored)."""
    runs = []
    for p in prepared:
        runs.append(create_run(p))
        p.dataset.release()
    return runs


def resume(
    ref: str | Path | Run | None = None,
    *,
    retry_failed: bool = False,
    runs_dir: str | Path = "runs",
    observer: Observer | None = None,
    mode: str | None = None,
    wait: bool = False,
) -> Run:
    """Finish a stopped or crashed run: in-flight work is redone, finished work never re-sent.

    `mode` switches a live run between `realtime` and `batch`: to real time, its requests
    still in batches are cancelled at the provider (best effort) and left behind; to
    batch, its remaining trials go to batches. A batch-mode run makes one collect pass
    (or, with `wait`, collects until finished)."""
    target = ref if isinstance(ref, Run) else open_run(ref, runs_dir)
    if mode is not None and mode not in ("realtime", "batch"):
        raise ConfigError(f"mode={mode}: expected mode=realtime or mode=batch")
    _execute([target], observer or Observer(), retry_failed=retry_failed, mode=mode, wait=wait)
    return target


def resume_many(
    runs: Sequence[Run],
    *,
    retry_failed: bool = False,
    observer: Observer | None = None,
    mode: str | None = None,
    wait: bool = False,
) -> None:
    """`resume` for several runs at once, in this one process (sharing limits and cache)."""
    _execute(list(runs), observer or Observer(), retry_failed=retry_failed, mode=mode, wait=wait)


def detach(runs: Sequence[Run]) -> int:
    """Finish `runs` in a background process that outlives this one; returns its pid.

    Its output goes to `detached.log` in the first run's folder."""
    import subprocess
    import sys

    log = (runs[0].path / "detached.log").open("ab")
    command = [sys.executable, "-m", "trialrun", "resume", *(str(r.path) for r in runs)]
    process = subprocess.Popen(
        [*command, "--wait", "--quiet"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,  # not killed with this terminal's process group
        close_fds=True,
    )
    log.close()
    return process.pid


def collect(
    ref: str | Path | Run | None = None,
    *,
    runs_dir: str | Path = "runs",
    observer: Observer | None = None,
    wait: bool = False,
) -> Run:
    """One idempotent step of a batch-mode run (or, with `wait`, steps until it is finished):
    store what the provider finished, resubmit what failed or expired, submit next stages."""
    target = ref if isinstance(ref, Run) else open_run(ref, runs_dir)
    if target.meta().get("mode", "realtime") != "batch":
        raise ConfigError(
            f"{target.path}: a real-time run has no batches; continue it with "
            f"`trialrun resume {target.path}` (or switch it: resume {target.path} mode=batch)"
        )
    _execute([target], observer or Observer(), wait=wait, busy_ok=True)
    return target


def _execute(runs: list[Run], observer: Observer, **options: Any) -> None:
    """`_aexecute` from synchronous code: on a fresh event loop, or, when this thread
    already runs one (a Jupyter notebook), on a loop in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_aexecute(runs, observer, **options))
        return
    failure: list[BaseException] = []

    def in_thread() -> None:
        try:
            asyncio.run(_aexecute(runs, observer, **options))
        except BaseException as exc:  # raised again in the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=in_thread, name="trialrun")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


async def _aexecute(
    runs: list[Run],
    observer: Observer,
    *,
    retry_failed: bool = False,
    mode: str | None = None,
    wait: bool = False,
    busy_ok: bool = False,
) -> None:
    try:
        locks = [_lock(r.path) for r in runs]
    except RunBusy:
        if busy_ok:  # cron or a second shell: the holder is doing the work
            observer.warn(f"{runs[0].path}: another trialrun is working on this run; nothing to do")
            return
        raise
    caches: dict[Path, ResponseCache] = {}
    opened: list[tuple[ExperimentRun, ResultsFile]] = []
    try:
        for target in runs:
            opened.append(_open_for_execution(target, caches, observer, retry_failed, mode))
        interrupted = await _main([e for e, _ in opened], observer, wait)
    finally:
        for experiment_run, results in opened:
            experiment_run.store.clear_live()
            experiment_run.store.reset_running()
            results.rewrite(experiment_run.store)
            experiment_run.store.close()
        for cache in caches.values():
            cache.close()
        for handle in locks:
            handle.close()
        observer.finished()
    _raise_if_incomplete(runs, opened, interrupted)


def _open_for_execution(
    target: Run,
    caches: dict[Path, ResponseCache],
    observer: Observer,
    retry_failed: bool,
    mode: str | None = None,
) -> tuple[ExperimentRun, ResultsFile]:
    store = target.store(readonly=False)
    meta = store.meta()
    experiment = Experiment.model_validate(meta["experiment"])
    stored_mode = meta.get("mode", experiment.mode)
    if mode is not None and mode != stored_mode:
        store.set_meta({"mode": mode})
        store.add_event("mode", f"switched from {stored_mode} to {mode}")
    store.reset_running(include_failed=retry_failed)
    results = ResultsFile(target.path / RESULTS_NAME)
    results.rewrite(store)
    cache = None
    if experiment.cache.enabled:
        folder = cache_dir(experiment.cache.dir)
        cache = caches.get(folder) or caches.setdefault(folder, ResponseCache(folder))
    counts = store.counts()
    observer.started(target, sum(counts.values()), counts["done"] + counts["failed"])

    def on_commit(committed: list[tuple[str, str]]) -> None:
        results.append(record for _, record in committed)
        failed = sum(1 for status, _ in committed if status == "failed")
        observer.committed(target, len(committed) - failed, failed)

    experiment_run = ExperimentRun(
        run_id=meta["run_id"],
        experiment=experiment,
        store=store,
        conversation=Conversation(experiment, meta["source"]),
        routes=build_routes(experiment, bool(meta["mock"]), observer.warn),
        cache=cache,
        id_field=meta["id_field"],
        on_commit=on_commit,
        on_wait=lambda lane, seconds, note: observer.waiting(target, lane, seconds, note),
        on_warn=observer.warn,
        reuse_attempts=store.has_attempts(),
        mode=mode or stored_mode,
        switched=mode is not None and mode != stored_mode,
    )
    if experiment_run.mode == "batch":
        check_batch_support(experiment_run.routes, str(target.path))
    return experiment_run, results


async def _main(runs: list[ExperimentRun], observer: Observer, wait: bool) -> bool:
    """Run everything; a SIGINT or SIGTERM stops cleanly. Returns True when interrupted."""
    stop = asyncio.Event()
    realtime = [r for r in runs if r.mode == "realtime"]
    batched = [r for r in runs if r.mode == "batch"]

    async def both() -> None:
        for run in realtime:
            if run.switched:
                for note in await leave_batches(run):
                    observer.warn(note)
        await asyncio.gather(
            execute(realtime, stop), collect_runs(batched, stop, wait, observer.collected)
        )

    task = asyncio.create_task(both())
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        stop.set()
        task.cancel()

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            handled.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        with signals_stop_renders():
            await task
        return False
    except asyncio.CancelledError:
        return True
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        for experiment_run in runs:
            for route in experiment_run.routes.values():
                await route.provider.aclose()


def _raise_if_incomplete(
    runs: list[Run], opened: list[tuple[ExperimentRun, ResultsFile]], interrupted: bool
) -> None:
    if interrupted:
        names = " ".join(str(r.path) for r in runs)
        raise Interrupted(
            f"stopped; committed results are safe. Continue with: trialrun resume {names}"
        )
    for target, (experiment_run, _) in zip(runs, opened, strict=True):
        if experiment_run.stopped_lanes:
            lane, message = next(iter(experiment_run.stopped_lanes.items()))
            fix = "the key" if any(code in message for code in ("401", "403")) else "the cause"
            raise RunIncomplete(
                f"{lane}: {message}; its trials were stopped and left pending. Fix {fix}, "
                f"then run: trialrun resume {target.path}"
            )


# ------------------------------------------------------------------ locking


class RunBusy(StoreError):
    """Another process holds the run's lock."""


OWNER_NAME = "run.lock"
"""Names the process that holds a run (its pid), for messages only: the lock itself is on
the database file, which cannot be removed without removing the run."""


def _lock(folder: Path) -> Any:
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
    try:
        pid = (folder / OWNER_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


def _locked_by_other(folder: Path) -> bool:
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


__all__ = [
    "Interrupted",
    "Observer",
    "Prepared",
    "Run",
    "RunBusy",
    "aresume",
    "arun",
    "collect",
    "create_run",
    "create_runs",
    "detach",
    "list_runs",
    "load",
    "load_many",
    "open_run",
    "plan_summary",
    "resume",
    "resume_many",
    "run",
    "run_prepared",
]
