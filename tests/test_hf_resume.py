"""Kill -9 during a local (`hf/`) run, then resume: every planned trial ends with exactly one
record and no trial committed before the kill is generated again.

A real `trialrun run` process generates with a tiny random-weight model built offline
(trialrun.local.tiny); the test watches the database read-only, kills the process once some
trials are committed and some are not, and resumes in-process.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch", reason="the local extra: pip install torch==2.13.0")
pytest.importorskip("transformers", reason="the local extra: pip install 'trialrun[local]'")

from tests.conftest import base_config, read_results, trialrun_subprocess

import trialrun
from trialrun.local.tiny import build_tiny_model

ITEMS = 40
TOTAL = ITEMS * 2  # × temperatures 0.0 and 0.7
WAIT_S = 30.0


def done_count(db: Path) -> int | None:
    """Committed records, through a read-only connection; None while not readable yet."""
    if not db.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    except sqlite3.Error:
        return None


def kill_once_some_are_done(proc: subprocess.Popen[str], runs: Path) -> Path:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = list(runs.iterdir()) if runs.is_dir() else []
        done = done_count(found[0] / "trialrun.db") if len(found) == 1 else None
        if done:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=10)
            assert proc.returncode == -signal.SIGKILL
            return found[0]
        if proc.poll() is not None:
            pytest.fail(f"the run ended ({proc.returncode}) before it was killed")
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"no record committed within {WAIT_S} s")


def test_kill_9_during_a_local_run_then_resume_finishes_each_trial_once(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "tiny")
    config = base_config(
        dataset={"items": [{"id": f"q{i:02d}", "prompt": f"Claim {i}?"} for i in range(ITEMS)]},
        models=[{"model": f"hf/{folder}", "options": {"batch_size": 2}}],
        params={"max_tokens": 12, "top_logprobs": 2},
        followups=[],
    )
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = trialrun_subprocess("run", "exp.yaml", "--quiet", cwd=tmp_path)
    run_dir = kill_once_some_are_done(proc, tmp_path / "runs")
    with closing(sqlite3.connect(run_dir / "trialrun.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        before = {t for (t,) in conn.execute("SELECT trial_id FROM records")}
    assert 0 < len(before) < TOTAL

    run = trialrun.resume(trialrun.open_run(run_dir))

    assert run.counts()["done"] == TOTAL
    records = read_results(run_dir)
    assert Counter(r["trial_id"] for r in records).most_common(1)[0][1] == 1
    assert len(records) == TOTAL and {r["status"] for r in records} == {"done"}
    with closing(sqlite3.connect(run_dir / "trialrun.db")) as conn:
        rows = conn.execute("SELECT trial_id FROM records").fetchall()
        answered = conn.execute(
            "SELECT trial_id, COUNT(*) FROM attempts WHERE response IS NOT NULL "
            "AND cache_hit = 0 AND turn >= 0 GROUP BY trial_id"
        ).fetchall()
    assert len(rows) == len({t for (t,) in rows}) == TOTAL  # one record per trial
    assert all(n == 1 for _, n in answered)  # nothing generated twice, before or after
    assert {t for t, _ in answered} == {r["trial_id"] for r in records}
