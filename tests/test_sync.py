"""Sync to object storage and resume from it: a real S3 API (moto's server on 127.0.0.1,
s3fs through AWS_ENDPOINT_URL), a kill -9 mid-run, and a resume from the bucket into a
fresh folder that redoes only the trials after the last snapshot."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import trialrun
from conftest import only_run, trialrun_subprocess
from trialrun import sync
from trialrun.store.copying import snapshot

BUCKET = f"trialrun-{uuid.uuid4().hex[:8]}"
"""moto keeps buckets in the process across servers: one name per test session, made new."""


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto S3 server on a free loopback port, a bucket in it, and the environment that
    points s3fs at it (dummy credentials); the server is stopped after the test."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        pytest.skip(f"moto[server] is not installed ({exc}): pip install -e '.[dev]'")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        server.start()
    except OSError as exc:
        pytest.skip(f"moto's server cannot start here: {exc}")
    _, port = server.get_host_and_port()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    fs, _ = sync.filesystem(f"s3://{BUCKET}")
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    try:
        yield server
    finally:
        server.stop()


def records_in(db: Path) -> dict[str, str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT trial_id, record FROM records").fetchall())


def download_db(url: str, dest: Path) -> Path:
    fs, root = sync.filesystem(url)
    fs.get_file(f"{root}/trialrun.db", str(dest))
    return dest


def run_folder(tmp_path: Path) -> Path | None:
    found = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    return found[0] if found else None


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


SYNCED_TOTAL = 20 * 2 * 2
"""Trials of the run `killed_after_a_snapshot` starts: 20 items x 2 models x 2 cells."""


def killed_after_a_snapshot(
    write_config: Callable[..., Path], tmp_path: Path, prefix: str
) -> tuple[Path, str]:
    """A `trialrun run` syncing to `prefix` every 10 trials, killed (-9) once a snapshot of
    at least 20 trials is uploaded: its folder, and the URL its snapshots went to."""
    items = [{"id": f"q{i:02d}", "prompt": f"Claim {i}?", "category": "c"} for i in range(20)]
    config = write_config(
        dataset={"items": items},
        mock={"latency_s": 0.03},
        limits={"mock": {"concurrency": 2}},
        output={"dir": "runs", "sync": prefix, "sync_every": 10},
    )
    proc = trialrun_subprocess("run", str(config), "-q", cwd=tmp_path)
    try:
        wait_until(lambda: (tmp_path / "runs").is_dir() and run_folder(tmp_path) is not None)
        folder = only_run(tmp_path / "runs")

        def synced_enough() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            state = sync.read_state(folder)
            return bool(state and state["ok"] and (state["trials"] or 0) >= 20)

        wait_until(synced_enough)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    return folder, f"{prefix}/{folder.name}"


def test_resume_from_bucket_after_kill_redoes_only_trials_after_the_last_snapshot(
    s3: Any, write_config: Callable[..., Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    folder, url = killed_after_a_snapshot(write_config, tmp_path, f"s3://{BUCKET}/sweeps")
    total = SYNCED_TOTAL
    snap = records_in(download_db(url, tmp_path / "snap.db"))
    assert 20 <= len(snap) < total  # killed mid-way, after a snapshot

    result = cli("resume", url, "--dir", "fresh", "-q")
    assert result.code == 0, result.err
    resumed = tmp_path / "fresh" / folder.name
    final = records_in(resumed / "trialrun.db")
    assert len(final) == total
    assert {tid: final[tid] for tid in snap} == snap  # the snapshot's trials were not redone
    assert trialrun.open_run(resumed).counts()["done"] == total
    # it went on syncing to the same place: the bucket now holds the finished run
    assert len(records_in(download_db(url, tmp_path / "end.db"))) == total
    assert sync.read_state(resumed)["ok"] is True


def test_a_failed_upload_does_not_fail_the_run(
    s3: Any,
    write_config: Callable[..., Path],
    cli: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sync, "RETRY_DELAYS_S", (0.01,))
    s3.stop()  # the store is gone: every upload fails
    config = write_config(output={"dir": "runs", "sync": f"s3://{BUCKET}/sweeps"})
    result = cli("run", str(config), "-q")
    assert result.code == 0, result.err
    folder = only_run(tmp_path / "runs")
    assert trialrun.open_run(folder).counts()["done"] == 16
    state = sync.read_state(folder)
    assert state is not None and state["ok"] is False and "connect" in state["error"].lower()
    events = trialrun.open_run(folder).status()["events"]
    assert any(kind == "sync" and "failed" in detail for _, kind, detail in events)
    assert "sync failed" in cli("status", str(folder)).out


def test_resume_from_a_file_url_into_a_fresh_folder(
    write_config: Callable[..., Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    bucket = tmp_path / "bucket"
    config = write_config(output={"dir": "runs", "sync": bucket.as_uri(), "sync_every": 5})
    assert cli("run", str(config), "-q").code == 0
    folder = only_run(tmp_path / "runs")
    synced = bucket / folder.name
    assert sorted(p.name for p in synced.iterdir()) == [
        "config.yaml",
        "manifest.json",
        "results.jsonl",
        "trialrun.db",
    ]
    assert len((synced / "results.jsonl").read_text().splitlines()) == 16
    assert "ok at" in cli("status", str(folder)).out
    result = cli("resume", synced.as_uri(), "--dir", "other", "-q")
    assert result.code == 0, result.err
    assert records_in(tmp_path / "other" / folder.name / "trialrun.db") == records_in(
        folder / "trialrun.db"
    )
    again = cli("resume", synced.as_uri(), "--dir", "other", "-q")
    assert again.code == 2 and "exists already" in again.err
    missing = cli("resume", (tmp_path / "nothing" / "x").as_uri(), "-q")
    assert missing.code == 2 and "no synced run here" in missing.err


def test_a_snapshot_taken_while_the_run_writes_is_a_consistent_database(
    tmp_path: Path,
) -> None:
    db = tmp_path / "live.db"
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE pairs (n INTEGER)")
    stop = threading.Event()

    def writer() -> None:  # every transaction adds two rows: a consistent copy has an even count
        with closing(sqlite3.connect(db, isolation_level=None)) as conn:
            while not stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO pairs VALUES (?)", [(1,), (2,)])
                conn.execute("COMMIT")

    thread = threading.Thread(target=writer)
    thread.start()
    counts = []
    try:
        for i in range(30):
            copy = tmp_path / f"copy{i}.db"
            snapshot(db, copy)
            with closing(sqlite3.connect(copy)) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                counts.append(conn.execute("SELECT count(*) FROM pairs").fetchone()[0])
    finally:
        stop.set()
        thread.join()
    assert all(n % 2 == 0 for n in counts)
    assert len(set(counts)) > 1  # the writer really wrote between snapshots


def test_sync_state_is_written_atomically(tmp_path: Path) -> None:
    sync.SyncState("file:///x", "2026-01-01T00:00:00.000Z", True, 3).write(tmp_path)
    assert json.loads((tmp_path / sync.SYNC_STATE).read_text())["trials"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert os.listdir(tmp_path) == [sync.SYNC_STATE]


def open_batches_in(db: Path, stage: int) -> list[str]:
    """Ids of a stage's batches still out in a synced database (a copy being written reads
    as none)."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT batch_id FROM batches WHERE state = 'open' AND batch_id IS NOT NULL "
                "AND stage = ?",
                (stage,),
            ).fetchall()
    except sqlite3.DatabaseError:
        return []
    return [batch_id for (batch_id,) in rows]


def test_a_batch_submitted_by_a_collect_pass_is_in_the_bucket_and_resume_collects_it(
    write_config: Callable[..., Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    bucket = tmp_path / "bucket"
    config = write_config(
        mode="batch",
        batch={"poll_min_s": 0.05, "poll_max_s": 0.1},
        mock={"batch_delay_s": 0.8},
        cache={"enabled": False},  # a resubmitted batch could not be answered from the cache
        # The follow-ups' batch (stage 1) is submitted by the pass that collects stage 0,
        # with no trial committed: only that pass can ask for the sync that holds it (stage
        # 0's batch may be in the first sync already, racing the first pass).
        output={
            "dir": "runs",
            "sync": bucket.as_uri(),
            "sync_every": 1000,
            "sync_interval_s": 3600,
        },
    )
    run = threading.Thread(target=trialrun.run, args=(str(config),), kwargs={"wait": True})
    run.start()
    seen = tmp_path / "seen"
    try:
        wait_until(lambda: (tmp_path / "runs").is_dir() and run_folder(tmp_path) is not None)
        folder = only_run(tmp_path / "runs")

        def batch_synced() -> bool:
            assert run.is_alive(), "the run ended before its batch was synced"
            shutil.rmtree(seen, ignore_errors=True)
            if (bucket / folder.name / "trialrun.db").is_file():
                shutil.copytree(bucket / folder.name, seen)
            return bool(open_batches_in(seen / "trialrun.db", stage=1))

        wait_until(batch_synced, timeout=10)
        frozen = tmp_path / "frozen" / folder.name  # the bucket as a machine lost now left it
        frozen.parent.mkdir()
        seen.rename(frozen)
    finally:
        run.join(timeout=30)
    [batch_id] = open_batches_in(frozen / "trialrun.db", stage=1)
    batch_dir = tmp_path / "cache" / "mock-batches"
    submitted = sorted(p.stem for p in batch_dir.glob("mockbatch_*.json"))
    assert len(submitted) == 2 and batch_id in submitted  # stages 0 and 1

    result = cli("resume", frozen.as_uri(), "--dir", "fresh", "--wait", "-q")
    assert result.code == 0, result.err
    resumed = trialrun.open_run(tmp_path / "fresh" / folder.name)
    assert resumed.counts()["done"] == 16
    after = sorted(p.stem for p in batch_dir.glob("mockbatch_*.json"))
    assert after == submitted  # stage 1 collected, not resubmitted
    assert {b["batch_id"] for b in resumed.status()["batches"]} == set(submitted)
