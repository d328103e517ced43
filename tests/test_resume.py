"""Resume through the Python API: finished work is never redone, stopped work is finished."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

import trialrun
from conftest import base_config, read_results, trialrun_subprocess
from trialrun.errors import RunNotFoundError, StoreError
from trialrun.runs import create_run, lock_run

REFUSED_ITEM = "q0"


def query(run: trialrun.Run, sql: str, *args: object) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(f"file:{run.path / 'trialrun.db'}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, args).fetchall()


def attempts_by_trial(run: trialrun.Run) -> Counter[str]:
    return Counter(row[0] for row in query(run, "SELECT trial_id FROM attempts"))


def results_ids(run: trialrun.Run) -> list[str]:
    return [r["trial_id"] for r in read_results(run.path)]


def refusing_config(write_config) -> Path:
    items = base_config()["dataset"]["items"]
    items[0] = {**items[0], "prompt": "Is claim 0 true? [[mock:refuse]]"}
    assert items[0]["id"] == REFUSED_ITEM
    return write_config(dataset={"items": items})


def test_resume_of_a_finished_run_sends_nothing_new(write_config) -> None:
    run = trialrun.run(write_config())
    assert run.counts() == {"pending": 0, "running": 0, "done": 16, "failed": 0}
    attempts_before = query(run, "SELECT * FROM attempts ORDER BY id")
    records_before = query(run, "SELECT trial_id, record FROM records ORDER BY seq")
    results_before = (run.path / "results.jsonl").read_text()

    again = trialrun.resume(run)

    assert again.path == run.path
    assert query(run, "SELECT * FROM attempts ORDER BY id") == attempts_before
    assert query(run, "SELECT trial_id, record FROM records ORDER BY seq") == records_before
    assert (run.path / "results.jsonl").read_text() == results_before


def test_resume_leaves_failed_trials_alone_unless_asked(write_config) -> None:
    run = trialrun.run(refusing_config(write_config))
    assert run.counts()["failed"] == 4
    assert run.counts()["done"] == 12
    before = attempts_by_trial(run)

    trialrun.resume(run)

    assert attempts_by_trial(run) == before
    assert run.counts()["failed"] == 4


def test_resume_retry_failed_reruns_only_the_failed_trials(write_config) -> None:
    run = trialrun.run(refusing_config(write_config))
    failed = {r["trial_id"] for r in run.records() if r["status"] == "failed"}
    done = {r["trial_id"] for r in run.records() if r["status"] == "done"}
    assert len(failed) == 4 and len(done) == 12
    assert {r["item_id"] for r in run.records() if r["status"] == "failed"} == {REFUSED_ITEM}
    before = attempts_by_trial(run)
    assert all(before[t] == 1 for t in failed), "a refusal is final: one attempt"

    trialrun.resume(run, retry_failed=True)

    after = attempts_by_trial(run)
    assert all(after[t] == before[t] + 1 for t in failed), "each failed trial was sent again"
    assert all(after[t] == before[t] for t in done), "done trials were not sent again"
    records = {r["trial_id"]: r for r in run.records()}
    assert len(records) == 16
    assert {t for t, r in records.items() if r["status"] == "failed"} == failed
    assert all("content policy" in records[t]["error"] for t in failed)
    assert run.counts() == {"pending": 0, "running": 0, "done": 12, "failed": 4}
    ids = results_ids(run)
    assert len(ids) == 16 and set(ids) == set(records)


def test_resume_finishes_trials_left_running_by_a_dead_process(write_config) -> None:
    config = write_config()
    run = create_run(trialrun.load(config))
    with closing(sqlite3.connect(run.path / "trialrun.db")) as conn:
        conn.execute("UPDATE trials SET state='running' WHERE seq < 6")
        conn.commit()
    assert run.counts() == {"pending": 10, "running": 6, "done": 0, "failed": 0}

    trialrun.resume(run)

    assert run.counts() == {"pending": 0, "running": 0, "done": 16, "failed": 0}
    ids = results_ids(run)
    assert len(ids) == 16 and len(set(ids)) == 16
    assert {r["status"] for r in read_results(run.path)} == {"done"}
    sent = query(
        run,
        "SELECT trial_id, turn, COUNT(*) FROM attempts WHERE response IS NOT NULL "
        "GROUP BY trial_id, turn",
    )
    assert len(sent) == 32 and all(n == 1 for _, _, n in sent)


def test_resume_through_cli_finishes_a_stopped_run_and_prints_summary(write_config, cli) -> None:
    run = create_run(trialrun.load(write_config()))
    result = cli("resume", str(run.path))
    assert result.code == 0, result.err
    assert "16 done, 0 failed" in result.out
    assert run.counts()["done"] == 16


def test_a_run_folder_cannot_be_run_by_two_processes_at_once(write_config, cli) -> None:
    run = create_run(trialrun.load(write_config()))
    handle = lock_run(run.path)
    try:
        result = cli("resume", str(run.path))
        assert result.code == 2
        assert "already running" in result.err
        with pytest.raises(StoreError, match="already running"):
            trialrun.resume(run)
        assert run.is_running()
        status = cli("status", str(run.path))
        assert "running" in status.out.splitlines()[0]
        assert run.counts() == {"pending": 16, "running": 0, "done": 0, "failed": 0}
        assert query(run, "SELECT COUNT(*) FROM attempts") == [(0,)]
    finally:
        handle.close()
    assert not run.is_running()
    trialrun.resume(run)
    assert run.counts()["done"] == 16


def test_open_run_finds_a_run_by_path_id_and_id_prefix(tmp_path: Path, write_config) -> None:
    first = trialrun.run(write_config("a.yaml"), ["name=alpha"])
    second = trialrun.run(write_config("b.yaml"), ["name=beta"])
    assert trialrun.open_run(first.path).path == first.path
    assert trialrun.open_run(first.run_id).path == first.path
    assert trialrun.open_run("alpha").path == first.path
    assert trialrun.open_run("beta-").path == second.path
    assert trialrun.open_run(second.run_id[:-2]).path == second.path
    moved = tmp_path / "elsewhere"
    (tmp_path / "runs").rename(moved)
    assert trialrun.open_run("alpha", runs_dir=moved).path == moved / first.run_id


def test_open_run_refuses_unknown_and_ambiguous_references(write_config) -> None:
    config = write_config()
    trialrun.run(config)
    trialrun.run(config, ["mock.latency_s=0"])
    with pytest.raises(RunNotFoundError):
        trialrun.open_run("t-")  # both runs match
    with pytest.raises(RunNotFoundError):
        trialrun.open_run("nope")
    Path("plain").mkdir()
    with pytest.raises(RunNotFoundError, match="not a run folder"):
        trialrun.open_run("plain")


def test_open_run_without_reference_is_the_latest_run(write_config) -> None:
    config = write_config()
    with pytest.raises(RunNotFoundError):
        trialrun.open_run()
    # Runs started within the same second must still order by creation.
    for _ in range(12):
        newest = create_run(trialrun.load(config))
        assert trialrun.open_run().path == newest.path


@pytest.mark.slow
def test_deleting_run_lock_does_not_let_a_second_process_run_the_folder(
    write_config, cli, isolated: Path
) -> None:
    config = write_config(mock={"latency_s": 0.2}, limits={"mock": {"concurrency": 2}})
    proc = trialrun_subprocess("run", str(config), "--quiet", cwd=isolated)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = [p for p in (isolated / "runs").glob("t-*") if (p / "run.lock").exists()]
            if found and trialrun.open_run(found[0]).counts()["done"] > 0:
                break
            time.sleep(0.05)
        run_dir = found[0]
        (run_dir / "run.lock").unlink()
        result = cli("resume", str(run_dir))
        assert result.code == 2, result.err
        assert "already running" in result.err
        assert trialrun.open_run(run_dir).is_running()
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    answered = query(
        trialrun.open_run(run_dir),
        "SELECT trial_id, turn, COUNT(*) FROM attempts GROUP BY trial_id, turn",
    )
    assert len(answered) == 32 and all(n == 1 for _, _, n in answered)
