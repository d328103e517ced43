"""Shards and merge: `--shard auto` from a job array's variables, `trialrun merge` of shard
runs into one run equal to the unsharded run, refusals and reports; `trialrun stop`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import trialrun
from conftest import only_run
from trialrun.errors import UsageError
from trialrun.merging import RUN_SPECIFIC, TURN_SPECIFIC
from trialrun.plan import Shard


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited but not reaped yet, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    record = {k: v for k, v in record.items() if k not in RUN_SPECIFIC}
    record["turns"] = [
        {k: v for k, v in turn.items() if k not in TURN_SPECIFIC} for turn in record["turns"]
    ]
    return record


def by_trial(run: Path) -> dict[str, dict[str, Any]]:
    return {r["trial_id"]: comparable(r) for r in trialrun.open_run(run).records()}


def shard_runs(cli: Callable[..., Any], config: Path, n: int, *extra: str) -> list[Path]:
    runs = []
    for i in range(n):
        assert cli("run", str(config), f"--shard={i}/{n}", "-q", *extra).code == 0
        runs.append(max(Path("runs").iterdir(), key=lambda p: p.stat().st_mtime_ns))
    return runs


@pytest.fixture
def config(write_config: Callable[..., Path]) -> Path:
    return write_config(scores={"yes": {"regex": "(?i)yes"}})


def test_merged_shards_equal_the_unsharded_run(
    cli: Callable[..., Any], config: Path, tmp_path: Path
) -> None:
    whole_result = cli("run", str(config), "-q")
    assert whole_result.code == 0, whole_result.err
    whole = only_run(tmp_path / "runs").rename(tmp_path / "whole")
    shards = shard_runs(cli, config, 3)
    result = cli("merge", *map(str, shards), "--into", "merged")
    assert result.code == 0, result.err
    merged = tmp_path / "runs" / "merged"
    assert "16 of 16 planned trials recorded" in result.out
    assert by_trial(merged) == by_trial(whole)
    assert len((merged / "results.jsonl").read_text().splitlines()) == 16
    assert trialrun.open_run(merged).counts()["done"] == 16
    stats = cli("stats", str(merged), "--metric", "yes", "--json")
    assert stats.code == 0, stats.err
    assert sum(g["n"] for g in json.loads(stats.out)["groups"]) == 16
    manifest = json.loads((merged / "manifest.json").read_text())
    assert manifest["run_id"] == "merged" and len(manifest["merged_from"]) == 3


def test_merge_reports_missing_and_conflicting_trials(
    cli: Callable[..., Any], config: Path, tmp_path: Path
) -> None:
    first, _ = shard_runs(cli, config, 2)
    again = shard_runs(cli, config, 1, "--shard=0/2")[0]  # shard 0 a second time
    with closing(sqlite3.connect(again / "trialrun.db")) as conn:  # one record told otherwise
        trial_id, record = conn.execute("SELECT trial_id, record FROM records LIMIT 1").fetchone()
        changed = json.loads(record)
        changed["turns"][0]["response"] = "something else"
        conn.execute(
            "UPDATE records SET record = ? WHERE trial_id = ?", (json.dumps(changed), trial_id)
        )
        conn.commit()
    result = cli("merge", str(first), str(again), "--into", str(tmp_path / "out" / "m"))
    assert result.code == 0, result.err
    planned = trialrun.open_run(first).meta()
    shard0 = sum(1 for _ in trialrun.open_run(first).records())
    assert f"{shard0} of 16 planned" in result.out
    assert f"missing: {16 - shard0} trials" in result.err
    assert f"conflicting: 1 trials (kept the first run's record): {trial_id}" in result.err
    kept = by_trial(tmp_path / "out" / "m")[trial_id]
    assert kept["turns"][0]["response"] != "something else"
    assert planned["shard"] == "0/2"


def test_merge_refuses_shards_of_different_configs(
    cli: Callable[..., Any], config: Path, write_config: Callable[..., Path]
) -> None:
    (one,) = shard_runs(cli, config, 1, "--shard=0/2")
    other = write_config("other.yaml", repeats=2)
    (two,) = shard_runs(cli, other, 1, "--shard=1/2")
    result = cli("merge", str(one), str(two), "--into", "m")
    assert result.code == 2
    assert "different config" in result.err and str(two) in result.err
    assert not Path("runs/m").exists() and not Path("runs/.m.tmp").exists()
    taken = cli("merge", str(one), "--into", str(one))
    assert taken.code == 2 and "exists already" in taken.err


@pytest.mark.parametrize(
    ("env", "shard"),
    [
        ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, Shard(2, 4)),
        (
            {
                "SLURM_ARRAY_TASK_ID": "3",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "1",
            },
            Shard(2, 3),
        ),
        ({"BATCH_TASK_INDEX": "0", "BATCH_TASK_COUNT": "5"}, Shard(0, 5)),
    ],
)
def test_shard_auto_reads_job_array_variables(env: dict[str, str], shard: Shard) -> None:
    assert Shard.parse("auto", env) == shard


def test_shard_auto_without_a_job_array_is_a_clear_error(
    cli: Callable[..., Any], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "BATCH_TASK_INDEX"):
        monkeypatch.delenv(name, raising=False)
    result = cli("run", str(config), "--shard", "auto", "-q")
    assert result.code == 2 and "SLURM_ARRAY_TASK_ID" in result.err
    with pytest.raises(UsageError, match="make no shard"):
        Shard.parse("auto", {"BATCH_TASK_INDEX": "5", "BATCH_TASK_COUNT": "5"})
    monkeypatch.setenv("BATCH_TASK_INDEX", "1")
    monkeypatch.setenv("BATCH_TASK_COUNT", "2")
    assert cli("run", str(config), "--shard", "auto", "-q").code == 0
    assert trialrun.open_run(None).meta()["shard"] == "1/2"


def test_stop_stops_a_detached_run_and_leaves_it_resumable(
    cli: Callable[..., Any], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    items = [{"id": f"q{i:02d}", "prompt": f"Claim {i}?", "category": "c"} for i in range(40)]
    config = write_config(
        dataset={"items": items}, mock={"latency_s": 0.05}, limits={"mock": {"concurrency": 2}}
    )
    started = subprocess.run(  # from a process of its own, as a shell would: its child detaches
        [sys.executable, "-m", "trialrun", "run", str(config), "--detach"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    folder = only_run(tmp_path / "runs")
    deadline = time.monotonic() + 20
    while "alive" not in (status := cli("status", str(folder))).out:
        assert time.monotonic() < deadline, status.out
        time.sleep(0.05)
    pid = int((folder / "run.lock").read_text())
    stopped = cli("stop", str(folder))
    assert stopped.code == 0, stopped.err
    assert f"stopped process {pid}" in stopped.out
    assert "process: not running" in cli("status", str(folder)).out
    deadline = time.monotonic() + 10
    while alive(pid):  # the detached process exits once it let the run go
        assert time.monotonic() < deadline
        time.sleep(0.05)
    counts = trialrun.open_run(folder).counts()
    assert counts["running"] == 0 and counts["pending"] > 0
    assert "not running; nothing to stop" in cli("stop", str(folder)).out
