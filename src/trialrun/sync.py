"""Sync: a running run's folder copied to object storage, and fetched back to resume it.

With `output.sync: URL` (any fsspec URL: `s3://bucket/prefix`, `gs://...`, `file:///...`)
a `Syncer` thread uploads the run to `URL/<run id>/`: a consistent snapshot of the store
(SQLite's backup API into a temporary file, never a copy of the live WAL database), the
complete lines of `results.jsonl`, `manifest.json` and `config.yaml`. It uploads when the
run starts, every `sync_every` committed trials, every `sync_interval_s` seconds while
trials commit, after each batch-mode collect pass that changed the run (a batch submitted
or collected: its id is in the bucket before the run's next trial commits), and at the
end. The event loop only counts commits and asks; uploads happen on the thread. A failed upload is retried with backoff, then reported (a note the run turns into
a warning and an event) and tried again at the next snapshot: never fatal to the run.
The last sync's outcome is written to `sync.json` in the run folder for `status`.

`fetch_run(URL/<run id>)` downloads the latest snapshot into a local run folder, whole or
not at all; `resume` continues it there, and it goes on syncing to the same place.

Credentials and endpoints come from each store's usual environment and files (for S3:
AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws, AWS_ENDPOINT_URL for MinIO/R2/a test server;
for GCS: Application Default Credentials); trialrun writes none of them anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trialrun.errors import ConfigError, RunNotFoundError
from trialrun.export import RESULTS_NAME
from trialrun.store import DB_NAME, Store, utcnow
from trialrun.store.copying import snapshot

SYNC_STATE = "sync.json"
"""The last sync's outcome, in the run folder (not uploaded)."""
SIDE_FILES = ("manifest.json", "config.yaml")
RETRY_DELAYS_S = (1.0, 4.0, 15.0)
"""Waits between the attempts of one sync: four attempts in all, then the next snapshot."""


def run_url(base: str, run_id: str) -> str:
    """Where a run syncs to: its id under the configured URL."""
    return f"{base.rstrip('/')}/{run_id}"


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for `url` and the path in it (listings never cached, so a
    second look sees what another process uploaded)."""
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"{url}: syncing needs fsspec: pip install 'trialrun[sync]'") from None
    try:
        fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True)
        return fs, str(path)
    except (ImportError, ValueError) as exc:
        raise ConfigError(
            f"{url}: {exc} (pip install 'trialrun[sync]' brings s3fs and gcsfs)"
        ) from None


def upload(folder: Path, url: str) -> int:
    """One snapshot of the run folder at `folder` to `url`; returns the trials recorded in it."""
    fs, root = filesystem(url)
    with tempfile.TemporaryDirectory(prefix="trialrun-sync-") as tmp:
        db, results = Path(tmp) / DB_NAME, Path(tmp) / RESULTS_NAME
        snapshot(folder / DB_NAME, db)
        _complete_lines(folder / RESULTS_NAME, results)
        with Store(db, readonly=True) as store:
            counts = store.counts()
        fs.makedirs(root, exist_ok=True)
        for name in SIDE_FILES:
            if (folder / name).is_file():
                fs.put_file(str(folder / name), f"{root}/{name}")
        fs.put_file(str(results), f"{root}/{RESULTS_NAME}")
        fs.put_file(str(db), f"{root}/{DB_NAME}")
    return counts["done"] + counts["failed"]


def _complete_lines(source: Path, dest: Path) -> None:
    """`source` up to its last newline (a line being appended is left for the next sync)."""
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        data = b""
    dest.write_bytes(data[: data.rfind(b"\n") + 1])


@dataclass
class SyncState:
    """What `sync.json` says: where, when, and how the last sync went."""

    url: str
    at: str
    ok: bool
    trials: int | None = None
    error: str | None = None

    def write(self, folder: Path) -> None:
        tmp = folder / f".{SYNC_STATE}.tmp"
        tmp.write_text(json.dumps(self.__dict__), encoding="utf-8")
        os.replace(tmp, folder / SYNC_STATE)


def read_state(folder: Path) -> dict[str, Any] | None:
    """The last sync's outcome for `status`, or None when the run never synced here."""
    try:
        state = json.loads((folder / SYNC_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


class Syncer:
    """Uploads one run folder's snapshots from a thread of its own (see the module doc)."""

    def __init__(
        self,
        folder: Path,
        url: str,
        every: int,
        interval_s: float,
        retry_delays_s: tuple[float, ...] | None = None,
    ) -> None:
        self.folder, self.url = folder, url
        self.every, self.interval_s = every, interval_s
        self.retry_delays_s = RETRY_DELAYS_S if retry_delays_s is None else retry_delays_s
        self._since = 0  # trials committed since the last snapshot was asked for
        self._dirty = True
        self._wake, self._stop = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._notes: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="trialrun-sync", daemon=True)

    def start(self) -> Syncer:
        self._wake.set()  # a first snapshot now: the run is in the bucket from its start
        self._thread.start()
        return self

    def committed(self, trials: int) -> None:
        """Called on the event loop after each commit: counts, and wakes the thread."""
        self._dirty = True
        self._since += trials
        if self._since >= self.every:
            self._since = 0
            self._wake.set()

    def wake(self) -> None:
        """Ask for a snapshot now (a collect pass submitted or collected batches)."""
        self._dirty = True
        self._wake.set()

    def notes(self) -> list[str]:
        """Failures to report since the last call (the caller warns and keeps them)."""
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def close(self) -> list[str]:
        """Stop the thread, make the final sync, and return the notes not yet taken."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._dirty = True
        self._sync(final=True)
        return self.notes()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            if self._stop.is_set():
                return
            self._wake.clear()
            if self._dirty:
                self._sync(final=False)

    def _sync(self, *, final: bool) -> None:
        """One sync with retries; a stop cuts the waits short (the final sync follows)."""
        self._dirty = False
        error = ""
        for delay in (*self.retry_delays_s, None):
            try:
                trials = upload(self.folder, self.url)
            except Exception as exc:  # any storage error: reported, never fatal
                error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                if delay is None or (not final and self._stop.wait(delay)):
                    break
                if final:
                    time.sleep(min(delay, 1.0))
                continue
            SyncState(self.url, utcnow(), True, trials).write(self.folder)
            return
        self._dirty = True
        SyncState(self.url, utcnow(), False, error=error).write(self.folder)
        with self._lock:
            self._notes.append(
                f"sync to {self.url} failed ({error}); "
                + ("the run is complete locally" if final else "tried again at the next snapshot")
            )


def fetch_run(url: str, runs_dir: str | Path = "runs") -> Path:
    """Download the run synced at `url` (`<output.sync>/<run id>`) into `runs_dir/<run id>`,
    whole or not at all, ready for `resume`."""
    fs, root = filesystem(url)
    root = root.rstrip("/")
    run_id = root.rsplit("/", 1)[-1]
    if not fs.exists(f"{root}/{DB_NAME}"):
        raise RunNotFoundError(f"{url}: no synced run here (no {DB_NAME}); name URL/RUN_ID")
    base = Path(runs_dir)
    final, tmp = base / run_id, base / f".{run_id}.tmp"
    if final.exists():
        raise ConfigError(
            f"{final} exists already: resume it (trialrun resume {final}), or fetch into "
            "another runs folder with --dir"
        )
    base.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name in (DB_NAME, RESULTS_NAME, *SIDE_FILES):
            with contextlib.suppress(FileNotFoundError):
                fs.get_file(f"{root}/{name}", str(tmp / name))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def is_url(ref: object) -> bool:
    """Whether a RUN argument names a synced run (`scheme://...`) rather than a folder or id."""
    return isinstance(ref, str) and "://" in ref
