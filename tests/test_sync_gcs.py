"""Sync to Google Cloud Storage and resume from it: gcsfs against a real GCS JSON API
(gcp-storage-emulator's server on 127.0.0.1, reached through STORAGE_EMULATOR_HOST, which
gcsfs honours), a kill -9 mid-run, and a resume from the bucket into a fresh folder that
ends with the planned trials each answered once."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import trialrun
from test_sync import SYNCED_TOTAL, download_db, killed_after_a_snapshot, records_in
from trialrun import sync

BUCKET = "trialrun-gcs"


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """An in-memory GCS emulator on a free loopback port with a bucket in it, and the
    environment that points gcsfs at it, anonymously; stopped after the test."""
    # gcsfs's experimental bucket-type probe (on unless this is false when gcsfs is first
    # imported) can wait out its 60 s gRPC timeout per bucket on an emulator, which has no
    # storage control API (measured with anonymous credentials, gcsfs 2026.10).
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    try:
        import gcsfs
        from gcp_storage_emulator.server import create_server
    except ImportError as exc:
        pytest.skip(
            f"gcsfs or gcp-storage-emulator is not installed ({exc}): pip install -e '.[dev]'"
        )
    if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
        pytest.fail(
            "gcsfs was imported earlier in this session with GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT "
            "on; set it to false before the first import (its bucket probe hangs ~60 s here)"
        )
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    try:
        server.start()
    except OSError as exc:
        pytest.skip(f"the GCS emulator cannot start here: {exc}")
    for key, value in {
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
        # No Application Default Credentials (a missing file fails fast, before any gcloud
        # login or metadata server is tried), so gcsfs falls back to anonymous access.
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "no-adc.json"),
        "NO_GCE_CHECK": "true",
    }.items():
        monkeypatch.setenv(key, value)
    fs, _ = sync.filesystem(f"gs://{BUCKET}")
    assert fs.credentials.method == "anon"
    fs.mkdir(BUCKET)
    try:
        yield server
    finally:
        server.stop()


def answers_per_turn(db: Path) -> dict[tuple[str, int], tuple[int, int]]:
    """Each (trial, turn) in a run database: its answered attempts, and how many of those
    were sent to the provider (the rest came from the response cache)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT trial_id, turn, count(*), sum(cache_hit = 0) FROM attempts "
            "WHERE error IS NULL GROUP BY trial_id, turn"
        ).fetchall()
    return {(trial, turn): (answered, sent) for trial, turn, answered, sent in rows}


def test_gs_sync_uploads_a_consistent_snapshot_and_resume_from_gs_finishes_each_trial_once(
    gcs: Any, write_config: Callable[..., Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    folder, url = killed_after_a_snapshot(write_config, tmp_path, f"gs://{BUCKET}/sweeps")
    total = SYNCED_TOTAL
    fs, root = sync.filesystem(url)
    assert {p.rsplit("/", 1)[-1] for p in fs.ls(root)} == {
        "config.yaml",
        "manifest.json",
        "results.jsonl",
        "trialrun.db",
    }
    snap_db = download_db(url, tmp_path / "snap.db")
    with closing(sqlite3.connect(f"file:{snap_db}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        planned = conn.execute("SELECT count(*) FROM trials").fetchone()[0]
    assert planned == total  # the whole plan is in the first snapshot
    snap = records_in(snap_db)
    assert 20 <= len(snap) < total  # killed mid-way, after a snapshot

    result = cli("resume", url, "--dir", "fresh", "-q")
    assert result.code == 0, result.err
    resumed = tmp_path / "fresh" / folder.name
    final = records_in(resumed / "trialrun.db")
    assert len(final) == total
    assert {tid: final[tid] for tid in snap} == snap  # the snapshot's trials were not redone
    assert trialrun.open_run(resumed).counts()["done"] == total
    # Every turn answered, none sent twice: a trial in flight at the snapshot had its first
    # turn's answer in it, and doing it again took that answer from the cache.
    answers = answers_per_turn(resumed / "trialrun.db")
    assert len(answers) == total * 2
    assert all(answered >= 1 and sent <= 1 for answered, sent in answers.values())
    # every planned trial present with one record, results.jsonl identical to the records
    assert cli("verify", str(resumed)).code == 0
    # it went on syncing to the same place: the bucket now holds the finished run
    assert records_in(download_db(url, tmp_path / "end.db")) == final
    assert sync.read_state(resumed)["ok"] is True
