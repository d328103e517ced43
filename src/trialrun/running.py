"""Running: executing run folders to the end in this process, or in a detached one.

`run`/`arun` load a config, create its run folder and execute it; `resume`, `collect`
and `resume_many` execute run folders that exist. Execution takes each run's lock, opens
its store, results file, routes and the shared response cache, runs the real-time and
batch executors side by side until done or a SIGINT/SIGTERM, then always leaves the store
consistent (in-flight trials back to pending, results.jsonl rewritten) and closes all.
An `Observer` hears what happens, for a display.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from trialrun.config import BudgetConfig, Experiment
from trialrun.errors import ConfigError, RunIncomplete
from trialrun.executor.batch import (
    CollectReport,
    check_batch_support,
    collect_runs,
    leave_batches,
)
from trialrun.executor.budget import BUDGET_STOP, Budget
from trialrun.executor.cache import ResponseCache, cache_dir
from trialrun.executor.judge import compile_judges
from trialrun.executor.realtime import execute
from trialrun.executor.task import load_task
from trialrun.executor.trial import GATE_STOP, ExperimentRun
from trialrun.export import RESULTS_NAME, ResultsFile
from trialrun.gates import Gates, gate_names
from trialrun.loading import ConfigSource, Prepared, load
from trialrun.plan import Shard
from trialrun.provenance import finish
from trialrun.routing import build_judge_routes, build_routes
from trialrun.runs import Run, RunBusy, create_runs, lock_run, open_run
from trialrun.sandbox import signals_stop_renders
from trialrun.scoring import Scorers
from trialrun.store import Store, utcnow
from trialrun.sync import Syncer, fetch_run, is_url, run_url
from trialrun.templates import Conversation


class Interrupted(RunIncomplete):
    """The run was stopped by a signal (Ctrl-C, SIGTERM)."""

    exit_code = 130


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
    target = _resume_target(ref, runs_dir, mode)
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


def resume(
    ref: str | Path | Run | None = None,
    *,
    retry_failed: bool = False,
    runs_dir: str | Path = "runs",
    observer: Observer | None = None,
    mode: str | None = None,
    wait: bool = False,
    budget_usd: float | None = None,
    ignore_gates: Sequence[str] = (),
) -> Run:
    """Finish a stopped or crashed run: in-flight work is redone, finished work never re-sent.

    `mode` switches a live run between `realtime` and `batch`: to real time, its requests
    still in batches are cancelled at the provider (best effort) and left behind; to
    batch, its remaining trials go to batches. A batch-mode run makes one collect pass
    (or, with `wait`, collects until finished)."""
    target = _resume_target(ref, runs_dir, mode)
    _execute(
        [target],
        observer or Observer(),
        retry_failed=retry_failed,
        mode=mode,
        wait=wait,
        budget_usd=budget_usd,
        ignore_gates=ignore_gates,
    )
    return target


def resume_many(
    runs: Sequence[Run],
    *,
    retry_failed: bool = False,
    observer: Observer | None = None,
    mode: str | None = None,
    wait: bool = False,
    budget_usd: float | None = None,
    ignore_gates: Sequence[str] = (),
) -> None:
    """`resume` for several runs at once, in this one process (sharing limits and cache);
    `budget_usd` sets each run's `budget.max_usd` anew (above what it has spent)."""
    _execute(
        list(runs),
        observer or Observer(),
        retry_failed=retry_failed,
        mode=mode,
        wait=wait,
        budget_usd=budget_usd,
        ignore_gates=ignore_gates,
    )


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


def open_target(ref: str | Path | None, runs_dir: str | Path = "runs") -> Run:
    """`open_run`, or for a synced run's URL (`s3://bucket/prefix/RUN_ID`), its latest
    snapshot downloaded into `runs_dir/RUN_ID` first."""
    if is_url(ref):
        return Run(fetch_run(str(ref), runs_dir))
    return open_run(ref, runs_dir)


def _resume_target(ref: str | Path | Run | None, runs_dir: str | Path, mode: str | None) -> Run:
    """The run `resume` means, once its `mode` switch (if any) is known to be a mode; a
    synced run's URL is fetched into `runs_dir` first."""
    target = ref if isinstance(ref, Run) else open_target(ref, runs_dir)
    if mode is not None and mode not in ("realtime", "batch"):
        raise ConfigError(f"mode={mode}: expected mode=realtime or mode=batch")
    return target


# ------------------------------------------------------------------ execution


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


Opened = list[tuple[ExperimentRun, ResultsFile]]
"""The runs being executed, each with the results file it appends to."""


async def _aexecute(
    runs: list[Run],
    observer: Observer,
    *,
    retry_failed: bool = False,
    mode: str | None = None,
    wait: bool = False,
    busy_ok: bool = False,
    budget_usd: float | None = None,
    ignore_gates: Sequence[str] = (),
) -> None:
    """Execute `runs` under their locks; whatever happens, leave each store consistent and
    close all that was opened, then raise if a run was stopped before its end."""
    try:
        locks = [lock_run(r.path) for r in runs]
    except RunBusy:
        if busy_ok:  # cron or a second shell: the holder is doing the work
            observer.warn(f"{runs[0].path}: another trialrun is working on this run; nothing to do")
            return
        raise
    caches: dict[Path, ResponseCache] = {}
    syncers: dict[Path, Syncer] = {}
    opened: Opened = []
    try:
        for target in runs:
            opened.append(
                _open_for_execution(
                    target, caches, observer, retry_failed, mode, budget_usd, ignore_gates, syncers
                )
            )
        interrupted = await _main([e for e, _ in opened], observer, wait)
    finally:
        _close(opened, caches, locks, syncers)
        observer.finished()
    _raise_if_incomplete(runs, opened, interrupted)


def _close(
    opened: Opened,
    caches: dict[Path, ResponseCache],
    locks: list[BinaryIO],
    syncers: dict[Path, Syncer] | None = None,
) -> None:
    """In-flight trials back to pending, results.jsonl rewritten whole, the final sync, then
    all closed and the locks let go (the caches are shared by the runs, so closed once each)."""
    syncers = syncers if syncers is not None else {}
    for experiment_run, results in opened:
        experiment_run.store.clear_live()
        experiment_run.store.reset_running()
        results.rewrite(experiment_run.store)
        counts = experiment_run.store.counts()
        finish(results.path.parent, utcnow(), not counts["pending"] + counts["running"])
        syncer = syncers.pop(results.path.parent, None)
        if syncer is not None:
            for note in syncer.close():
                experiment_run.store.add_event("sync", note)
            experiment_run.store.flush()
        experiment_run.store.close()
    for syncer in syncers.values():  # a run that failed to open after its syncer started
        syncer.close()
    for cache in caches.values():
        cache.close()
    for handle in locks:
        handle.close()


def _open_for_execution(
    target: Run,
    caches: dict[Path, ResponseCache],
    observer: Observer,
    retry_failed: bool,
    mode: str | None = None,
    budget_usd: float | None = None,
    ignore_gates: Sequence[str] = (),
    syncers: dict[Path, Syncer] | None = None,
) -> tuple[ExperimentRun, ResultsFile]:
    """`target` ready for the executors: its store (mode switched if asked, stopped and,
    with `retry_failed`, failed trials pending again), results file, routes and cache."""
    store = target.store(readonly=False)
    meta = store.meta()
    experiment = Experiment.model_validate(meta["experiment"])
    if budget_usd is not None:
        experiment = _raise_budget(store, meta, experiment, budget_usd)
    stored_mode = meta.get("mode", experiment.mode)
    switched = _switch_mode(store, stored_mode, mode)
    store.reset_running(include_failed=retry_failed)
    results = ResultsFile(target.path / RESULTS_NAME)
    results.rewrite(store)
    cache = shared_cache(experiment, caches)
    counts = store.counts()
    observer.started(target, sum(counts.values()), counts["done"] + counts["failed"])
    mock = bool(meta["mock"])
    syncer = _syncer(target, experiment, meta["run_id"])
    experiment_run = ExperimentRun(
        run_id=meta["run_id"],
        experiment=experiment,
        store=store,
        conversation=Conversation(experiment, meta["source"]),
        routes=build_routes(experiment, mock, observer.warn),
        cache=cache,
        id_field=meta["id_field"],
        on_commit=_on_commit(target, results, observer, syncer, store),
        on_wait=lambda lane, seconds, note: observer.waiting(target, lane, seconds, note),
        on_warn=observer.warn,
        on_collected=syncer.wake if syncer is not None else None,
        reuse_attempts=store.has_attempts(),
        mode=mode or stored_mode,
        switched=switched,
        scorers=Scorers(experiment, meta["source"], meta["id_field"]),
        config_hash=meta.get("hashes", {}).get("config"),
        task=load_task(experiment.task, meta["source"]) if experiment.task else None,
    )
    judge_routes = build_judge_routes(experiment, mock, observer.warn)
    for route in [*experiment_run.routes.values(), *judge_routes.values()]:
        route.provider.notify = store.add_event  # a Ray pool's actors, for instance
    experiment_run.judges = compile_judges(experiment, judge_routes, meta["source"])
    if experiment.gates:
        experiment_run.gates = _gates(store, experiment, meta, ignore_gates)
        experiment_run.check_gates()  # one that fires on what is committed stops it now
    if experiment.budget is not None:
        experiment_run.budget = Budget(
            experiment.budget.max_usd,
            store.total_spend(),
            experiment.budget.warn_at,
            observer.warn,
        )
    if experiment_run.mode == "batch":
        if experiment.task:
            raise ConfigError(f"{target.path}: task: a custom trial runs in real time only")
        check_batch_support(experiment_run.routes, str(target.path))
        check_batch_support({j.name: j.route for j in experiment_run.judges}, str(target.path))
    if syncer is not None and syncers is not None:
        syncers[target.path] = syncer.start()
    return experiment_run, results


def _syncer(target: Run, experiment: Experiment, run_id: str) -> Syncer | None:
    """The run's uploader when `output.sync` names a place (not started yet)."""
    output = experiment.output
    if output.sync is None:
        return None
    url = run_url(output.sync, run_id)
    return Syncer(target.path, url, output.sync_every, output.sync_interval_s)


def _gates(
    store: Store, experiment: Experiment, meta: dict[str, Any], ignore: Sequence[str]
) -> Gates:
    """The run's gates less those ignored (now or on an earlier resume: kept in meta), fed
    the records committed so far."""
    known = gate_names(experiment)
    for name in ignore:
        if name not in known:
            raise ConfigError(f"--ignore-gate {name}: no such gate (the run's: {', '.join(known)})")
    ignored = sorted({*meta.get("ignored_gates", []), *ignore})
    if ignore:
        store.set_meta({"ignored_gates": ignored, "gate": None})
        store.add_event(
            "gate", f"ignoring gate{'s' if len(ignore) > 1 else ''} {', '.join(ignore)}"
        )
    gates = Gates(experiment, meta["source"], ignored)
    if gates:
        for record in store.records():
            gates.add(orjson.loads(record))
    return gates


def _raise_budget(
    store: Store, meta: dict[str, Any], experiment: Experiment, usd: float
) -> Experiment:
    """`resume RUN budget.max_usd=N`: the run's cap set to N, above what it has spent."""
    spent = store.total_spend()
    if usd <= spent:
        raise ConfigError(
            f"budget.max_usd={usd:g}: the run has already spent ${spent:.4f}; give more than that"
        )
    budget = (experiment.budget or BudgetConfig(max_usd=usd)).model_copy(update={"max_usd": usd})
    raised = experiment.model_copy(update={"budget": budget})
    stored = {**meta["experiment"], "budget": budget.model_dump(mode="json")}
    store.set_meta({"experiment": stored})
    store.add_event("budget", f"budget.max_usd set to {usd:g} (spent so far ${spent:.4f})")
    return raised


def _switch_mode(store: Store, stored_mode: str, mode: str | None) -> bool:
    """Record `resume ... mode=X` in the store when X is not the run's mode; True if so."""
    if mode is None or mode == stored_mode:
        return False
    store.set_meta({"mode": mode})
    store.add_event("mode", f"switched from {stored_mode} to {mode}")
    return True


def shared_cache(experiment: Experiment, caches: dict[Path, ResponseCache]) -> ResponseCache | None:
    """The experiment's response cache, one per folder for all runs in this process."""
    if not experiment.cache.enabled:
        return None
    folder = cache_dir(experiment.cache.dir)
    return caches.get(folder) or caches.setdefault(folder, ResponseCache(folder))


def _on_commit(
    target: Run,
    results: ResultsFile,
    observer: Observer,
    syncer: Syncer | None = None,
    store: Store | None = None,
) -> Callable[[list[tuple[str, str]]], None]:
    """What follows each committed group: its records appended to results.jsonl, counts told,
    the syncer told (and its failures warned about and kept as events)."""

    def on_commit(committed: list[tuple[str, str]]) -> None:
        results.append(record for _, record in committed)
        failed = sum(1 for status, _ in committed if status == "failed")
        observer.committed(target, len(committed) - failed, failed)
        if syncer is not None:
            syncer.committed(len(committed))
            for note in syncer.notes():
                observer.warn(note)
                if store is not None:
                    store.add_event("sync", note)

    return on_commit


async def _main(runs: list[ExperimentRun], observer: Observer, wait: bool) -> bool:
    """Run everything; a SIGINT or SIGTERM stops cleanly. Returns True when interrupted."""
    stop = asyncio.Event()
    task = asyncio.create_task(_realtime_and_batched(runs, stop, observer, wait))
    try:
        with signals_cancel(task, stop), signals_stop_renders():
            await task
        return False
    except asyncio.CancelledError:
        return True
    finally:
        for experiment_run in runs:
            for route in experiment_run.routes.values():
                await route.provider.aclose()
            for judge in experiment_run.judges:
                await judge.route.provider.aclose()


async def _realtime_and_batched(
    runs: list[ExperimentRun], stop: asyncio.Event, observer: Observer, wait: bool
) -> None:
    """Both executors side by side; a run switched to real time first leaves its batches."""
    realtime = [r for r in runs if r.mode == "realtime"]
    batched = [r for r in runs if r.mode == "batch"]
    for run in realtime:
        if run.switched:
            for note in await leave_batches(run):
                observer.warn(note)
    await asyncio.gather(
        execute(realtime, stop), collect_runs(batched, stop, wait, observer.collected)
    )


@contextlib.contextmanager
def signals_cancel(task: asyncio.Task[None], stop: asyncio.Event) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set `stop` and cancel `task` (where this loop can
    take signal handlers: not on a loop outside the main thread)."""
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
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def _raise_if_incomplete(runs: list[Run], opened: Opened, interrupted: bool) -> None:
    """Interrupted, or a lane stopped (a bad key, say): say how to continue."""
    if interrupted:
        names = " ".join(str(r.path) for r in runs)
        raise Interrupted(
            f"stopped; committed results are safe. Continue with: trialrun resume {names}"
        )
    for target, (experiment_run, _) in zip(runs, opened, strict=True):
        if GATE_STOP in experiment_run.stopped_lanes:
            gate = (target.meta().get("gate") or {}).get("name", "NAME")
            raise RunIncomplete(
                f"{experiment_run.stopped_lanes[GATE_STOP]}; the run stopped, resumable. Go on "
                f"without it: trialrun resume {target.path} --ignore-gate {gate}"
            )
        if BUDGET_STOP in experiment_run.stopped_lanes:
            raise RunIncomplete(
                f"{experiment_run.stopped_lanes[BUDGET_STOP]}; the run stopped, resumable. "
                f"{_to_finish(target)}Continue with a higher cap: trialrun resume "
                f"{target.path} budget.max_usd=N"
            )
        if experiment_run.stopped_lanes:
            lane, message = next(iter(experiment_run.stopped_lanes.items()))
            fix = "the key" if any(code in message for code in ("401", "403")) else "the cause"
            raise RunIncomplete(
                f"{lane}: {message}; its trials were stopped and left pending. Fix {fix}, "
                f"then run: trialrun resume {target.path}"
            )


def _to_finish(target: Run) -> str:
    """About what the rest would cost, from the mean cost of the trials done so far."""
    rows = target.summary()
    done = sum(r["done"] + r["failed"] for r in rows)
    cost = sum(r["cost_usd"] or 0.0 for r in rows)
    counts = target.counts()
    left = counts["pending"] + counts["running"]
    if not done or not left:
        return ""
    return f"About ${cost / done * left:.2f} more would finish its {left:,} trials. "
