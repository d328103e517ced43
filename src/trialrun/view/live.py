"""What is slow to read from a run, recomputed in the background as the run writes.

A report over a large run takes seconds (the statistics stream every record per metric),
and so does `Run.status()` (its spend, judge and score counts scan every attempt and
record: 1.8 s at 100,000 trials), far more than a page may take. So each run keeps the
latest of each (a `Snapshot`: the report's rendered sections, or the status) and a page
shows it at once, beside what is cheap to read on every request (`pulse`); a request that finds the run's database changed
since (the size and mtime of its file and WAL) starts one recomputation in a thread,
at most once per `min_interval_s` or `cost_factor` times the last computation's time,
whichever is longer, so the dashboard takes a bounded share of a CPU while a sweep writes.
A run's first request waits up to `first_wait_s` for its first snapshot.

The report is computed in a separate process (one worker, started on first use), so its
pure-Python statistics never hold the server's GIL while pages are answered; the status
is mostly SQLite, which releases the GIL, and is computed in a thread.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, ProcessPoolExecutor
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Literal

from trialrun.errors import TrialrunError
from trialrun.report.data import ReportOptions, build_report
from trialrun.report.html import sections
from trialrun.runs import Run
from trialrun.store import DB_NAME

LIVE_SECTIONS = ("stats", "judges", "scores", "usage")
"""The report's sections a run page shows (the trials are the record browser's)."""
Version = tuple[int, ...]


@dataclass(frozen=True)
class Snapshot:
    """One computation: the report's live sections (HTML) and the records they count, or
    the run's `status()`; the database version it read, when, and how long it took."""

    value: Any
    records: int
    version: Version
    computed_at: float
    compute_s: float


Kind = Literal["report", "status"]


def db_version(path: Path) -> Version:
    """Changes whenever the run's database does: size and mtime of the file and its WAL."""
    out: list[int] = []
    for name in (DB_NAME, DB_NAME + "-wal"):
        try:
            found = (path / name).stat()
            out += [found.st_size, found.st_mtime_ns]
        except OSError:
            out += [0, 0]
    return tuple(out)


class LiveReports:
    """Per run: the latest snapshot, and at most one recomputation in flight."""

    def __init__(
        self, min_interval_s: float = 2.0, cost_factor: float = 4.0, first_wait_s: float = 1.0
    ) -> None:
        self.min_interval_s = min_interval_s
        self.cost_factor = cost_factor
        self.first_wait_s = first_wait_s
        self._lock = threading.Lock()
        self._snapshots: dict[tuple[Path, Kind], Snapshot] = {}
        self._busy: dict[tuple[Path, Kind], threading.Thread] = {}
        self._started: dict[tuple[Path, Kind], float] = {}
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def close(self) -> None:
        """Stop the report worker, if one was started."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _worker(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise CancelledError
            if self._pool is None:
                context = multiprocessing.get_context("spawn")  # never fork a threaded server
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
            return self._pool

    def get(self, run: Run, kind: Kind) -> Snapshot | None:
        """The run's latest snapshot of `kind` (None before its first); starts a
        recomputation when the run changed and the last one is long enough ago."""
        key = (run.path, kind)
        with self._lock:
            found = self._snapshots.get(key)
            thread = None if key in self._busy else self._maybe_start(run, kind, found)
        if found is None and thread is not None:  # the run's first request waits a little
            thread.join(self.first_wait_s)
            with self._lock:
                found = self._snapshots.get(key)
        return found

    def _maybe_start(self, run: Run, kind: Kind, found: Snapshot | None) -> threading.Thread | None:
        key, version = (run.path, kind), db_version(run.path)
        if found is not None:
            wait = max(self.min_interval_s, self.cost_factor * found.compute_s)
            if found.version == version or time.monotonic() - self._started[key] < wait:
                return None
        thread = threading.Thread(target=self._compute, args=(run, kind, version), daemon=True)
        self._busy[key] = thread
        self._started[key] = time.monotonic()
        thread.start()
        return thread

    def _compute(self, run: Run, kind: Kind, version: Version) -> None:
        start = time.perf_counter()
        try:
            value: Any
            if kind == "report":
                value, records = self._worker().submit(render_live, run.path).result()
            else:
                value, records = run.status(), 0
            took = time.perf_counter() - start
            with self._lock:
                self._snapshots[run.path, kind] = Snapshot(
                    value, records, version, time.time(), took
                )
        except (CancelledError, RuntimeError):  # closed, or the worker died: no snapshot
            return
        finally:  # a bug keeps its traceback (threading prints it) and frees the run
            with self._lock:
                self._busy.pop((run.path, kind), None)


class Rates:
    """Trials finished per second, from the finished counts this dashboard has seen over the
    last `window_s` (no query: `Store.recent_rate` scans the records, 75 ms at 100,000)."""

    def __init__(self, window_s: float = 60.0, min_span_s: float = 5.0) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._lock = threading.Lock()
        self._seen: dict[Path, deque[tuple[float, int]]] = {}

    def observe(self, path: Path, finished: int) -> float | None:
        """Record `finished` now; the rate over the window, None while it spans too little."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(path, deque())
            seen.append((now, finished))
            while len(seen) > 2 and now - seen[1][0] >= self.window_s:
                seen.popleft()
            start, first = seen[0]
        span = now - start
        return (finished - first) / span if span >= self.min_span_s else None


def pulse(run: Run, rates: Rates, slow_rate: float | None) -> dict[str, Any]:
    """The fields of `Run.status()` cheap enough for every request (counts, running, batch
    jobs, events, gate; the rate and ETA from `rates`, else `slow_rate`, the background
    status's): ~40 ms at 100,000 trials."""
    with run.store() as store:
        counts, meta = store.counts(), store.meta()
        batches, events = store.batches(), store.events(10)
    left = counts["pending"] + counts["running"]
    running = run.is_running()
    rate = rates.observe(run.path, counts["done"] + counts["failed"])
    rate = slow_rate if rate is None else rate
    return {
        "run_id": run.run_id, "counts": counts, "total": sum(counts.values()),
        "running": running, "live": meta.get("live") if running else None,
        "rate_per_s": rate or 0.0, "eta_s": left / rate if rate and left else None,
        "mode": meta.get("mode", "realtime"), "batches": batches, "events": events,
        "gate": meta.get("gate"),
    }  # fmt: skip


def render_live(path: Path) -> tuple[str, int]:
    """The live sections' HTML and the records they count (run in the worker process)."""
    run = Run(path)
    try:
        data = build_report(run, ReportOptions(max_trials=0))
    except (TrialrunError, OSError, sqlite3.Error) as exc:
        return f"<p class=warn>statistics unavailable: {escape(str(exc))}</p>", 0
    parts = sections(data, LIVE_SECTIONS)
    return "".join(f"<h2 id='{key}'>{escape(t)}</h2>{body}" for key, t, body in parts), data.records
