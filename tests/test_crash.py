"""Crash safety with a real process: kill -9 mid-run, resume, and nothing is lost or sent twice.

A `trialrun run` subprocess works through 320 two-turn trials with latency and a
fault mix; the test watches its database read-only, kills it mid-run, checks the
database is intact, resumes it to the end, and then checks that every planned trial
has exactly one record and that no committed response was requested again.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

import trialrun
from conftest import read_results, trialrun_subprocess
from trialrun.plan import expand

pytestmark = pytest.mark.slow

TOTAL = 40 * 2 * 2 * 2
WAIT_S = 20.0
FINISH_S = 25.0


def crash_config(write_config) -> Path:
    items = [
        {"id": f"q{i:02d}", "prompt": f"Is claim {i} true?", "category": f"c{i % 3}"}
        for i in range(40)
    ]
    return write_config(
        "crash.yaml",
        dataset={"items": items},
        repeats=2,
        mock={
            "latency_s": 0.01,
            "jitter_s": 0.02,
            "errors": {"rate_limit": 0.03, "server": 0.02},
            "retry_after_s": 0.01,
        },
        limits={"mock": {"concurrency": 8}},
        retry={"attempts": 10, "base_wait_s": 0.01, "max_wait_s": 0.05},
    )


# ------------------------------------------------------------------ watching the process


def find_run_dir(runs_dir: Path) -> Path | None:
    if not runs_dir.is_dir():
        return None
    found = [p for p in runs_dir.iterdir() if not p.name.startswith(".")]
    return found[0] if len(found) == 1 and (found[0] / "trialrun.db").is_file() else None


def trial_states(db: Path) -> Counter[str] | None:
    """Trials by state, read through a read-only connection; None while not readable yet."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)) as conn:
            return Counter(
                dict(conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
            )
    except sqlite3.Error:
        return None


def wait_for(
    proc: subprocess.Popen[str],
    runs_dir: Path,
    ready: Callable[[Counter[str]], bool],
    timeout: float = WAIT_S,
) -> Path:
    """Poll until the run's trial states satisfy `ready`; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_dir = find_run_dir(runs_dir)
        states = trial_states(run_dir / "trialrun.db") if run_dir else None
        if run_dir is not None and states is not None and ready(states):
            return run_dir
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"trialrun exited ({proc.returncode}) before the moment to stop it: {err}")
        time.sleep(0.01)
    stop(proc, signal.SIGKILL)
    pytest.fail(f"timed out after {timeout} s waiting for the run to progress")


def stop(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str, str]:
    os.kill(proc.pid, sig)
    try:
        out, err = proc.communicate(timeout=FINISH_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"trialrun did not exit within {FINISH_S} s of {sig.name}")
    return proc.returncode, out, err


def finish(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = trialrun_subprocess(*args, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=FINISH_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"`trialrun {' '.join(args)}` did not finish within {FINISH_S} s")
    return proc.returncode, out, err


def between(low: int, high: int) -> Callable[[Counter[str]], bool]:
    """Ready when at least `low` trials are finished and fewer than `high`."""

    def ready(states: Counter[str]) -> bool:
        finished = states["done"] + states["failed"]
        return low <= finished < high

    return ready


def kill_mid_run(proc: subprocess.Popen[str], runs_dir: Path, low: int) -> Path:
    run_dir = wait_for(proc, runs_dir, between(low, TOTAL))
    code, _, _ = stop(proc, signal.SIGKILL)
    assert code == -signal.SIGKILL
    states = trial_states_rw(run_dir / "trialrun.db")
    assert 0 < states["done"] < TOTAL, states
    return run_dir


# ------------------------------------------------------------------ checking the result


def trial_states_rw(db: Path) -> Counter[str]:
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall()
    return Counter(dict(rows))


def assert_complete_and_never_resent(run_dir: Path, config: Path) -> None:
    prepared = trialrun.load(config)
    planned = [t.trial_id for t in expand(prepared.experiment, prepared.dataset.ids)]
    assert len(planned) == len(set(planned)) == TOTAL

    with closing(sqlite3.connect(run_dir / "trialrun.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        trial_rows = conn.execute("SELECT trial_id, state FROM trials").fetchall()
        record_rows = conn.execute("SELECT trial_id, status FROM records").fetchall()
        resent = conn.execute(
            "SELECT trial_id, turn, COUNT(*) FROM attempts "
            "WHERE response IS NOT NULL AND cache_hit = 0 "
            "GROUP BY trial_id, turn HAVING COUNT(*) > 1"
        ).fetchall()
        answered = conn.execute(
            "SELECT COUNT(DISTINCT trial_id || ':' || turn) FROM attempts "
            "WHERE response IS NOT NULL"
        ).fetchone()[0]

    assert {t for t, _ in trial_rows} == set(planned)
    assert {s for _, s in trial_rows} == {"done"}

    record_ids = [t for t, _ in record_rows]
    assert Counter(record_ids) == Counter(planned), "one record per planned trial"
    assert {s for _, s in record_rows} == {"done"}

    results = read_results(run_dir)
    result_ids = [r["trial_id"] for r in results]
    assert Counter(result_ids) == Counter(planned), "results.jsonl: each trial exactly once"
    assert {r["status"] for r in results} == {"done"}
    assert all(len(r["turns"]) == 2 for r in results)

    assert resent == [], f"committed responses were requested again: {resent[:5]}"
    assert answered == 2 * TOTAL


# ------------------------------------------------------------------ the tests


def test_kill_9_mid_run_then_resume_finishes_every_trial_once(tmp_path: Path, write_config) -> None:
    config = crash_config(write_config)
    runs_dir = tmp_path / "runs"
    proc = trialrun_subprocess("run", str(config), cwd=tmp_path)
    run_dir = kill_mid_run(proc, runs_dir, low=TOTAL // 5)

    code, out, err = finish("resume", str(run_dir), cwd=tmp_path)

    assert code == 0, err
    assert f"{TOTAL} done, 0 failed" in out
    assert_complete_and_never_resent(run_dir, config)


def test_three_kills_at_different_moments_lose_and_repeat_nothing(
    tmp_path: Path, write_config
) -> None:
    config = crash_config(write_config)
    runs_dir = tmp_path / "runs"
    proc = trialrun_subprocess("run", str(config), cwd=tmp_path)
    run_dir = kill_mid_run(proc, runs_dir, low=1)
    finished_before = sum(trial_states_rw(run_dir / "trialrun.db")[s] for s in ("done", "failed"))
    for share in (0.4, 0.7):
        low = max(int(TOTAL * share), finished_before + 1)
        proc = trialrun_subprocess("resume", str(run_dir), cwd=tmp_path)
        kill_mid_run(proc, runs_dir, low=low)
        finished_now = trial_states_rw(run_dir / "trialrun.db")["done"]
        assert finished_now > finished_before, "each resume made progress before its kill"
        finished_before = finished_now

    code, out, err = finish("resume", str(run_dir), cwd=tmp_path)

    assert code == 0, err
    assert f"{TOTAL} done, 0 failed" in out
    assert_complete_and_never_resent(run_dir, config)


def test_sigterm_stops_gracefully_and_resume_finishes(tmp_path: Path, write_config) -> None:
    config = crash_config(write_config)
    runs_dir = tmp_path / "runs"
    proc = trialrun_subprocess("run", str(config), cwd=tmp_path)
    run_dir = wait_for(proc, runs_dir, between(TOTAL // 5, TOTAL))

    code, _, err = stop(proc, signal.SIGTERM)

    assert code == 130, err
    assert "trialrun resume" in err
    assert run_dir.name in err
    states = trial_states_rw(run_dir / "trialrun.db")
    assert states["running"] == 0, states
    assert 0 < states["done"] < TOTAL
    assert len(read_results(run_dir)) == states["done"] + states["failed"]

    code, out, err = finish("resume", str(run_dir), cwd=tmp_path)

    assert code == 0, err
    assert f"{TOTAL} done, 0 failed" in out
    assert_complete_and_never_resent(run_dir, config)
