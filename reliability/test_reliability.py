"""Trying to break trialrun: kill storms under server faults (real time and batch collect),
servers that hang, answer garbage or close mid-body, and a disk that fills up.

Quick versions run in CI (`make test`); the long ones with
`TRIALRUN_RELIABILITY=long make reliability` (more trials, 10 kills each).
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

import trialrun
from trialrun.plan import expand
from trialrun.testing import BatchFaults, FakeServer, Faults

LONG = os.environ.get("TRIALRUN_RELIABILITY") == "long"
KILLS = 10 if LONG else 4
KEY = "sk-reliability-0123456789"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRIALRUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer("openai", api_key=KEY, record=False) as fake:
        yield fake


def config(server: FakeServer, items: int, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "storm",
        "seed": 3,
        "dataset": {
            "items": [{"id": f"q{i:04d}", "prompt": f"Is claim {i} true?"} for i in range(items)]
        },
        "models": [
            {"model": "openai/fake-model", "base_url": server.url, "api_key": "${env:FAKE_API_KEY}"}
        ],
        "grid": {"temperature": [0.0, 0.7]},
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "followups": ["Are you sure?"],
        "params": {"max_tokens": 32},
        "limits": {"openai": {"concurrency": 16}},
        "retry": {"attempts": 20, "base_wait_s": 0.005, "max_wait_s": 0.05, "timeout_s": 2},
    }
    base.update(changes)
    return base


def spawn(*args: str, limit_bytes: int | None = None) -> subprocess.Popen[str]:
    def limits() -> None:
        if limit_bytes is not None:  # a full disk, as a file-size limit (EFBIG, not a signal)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen(
        [sys.executable, "-m", "trialrun", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limits,
    )


def the_run() -> Path:
    (found,) = [p for p in Path("runs").iterdir() if not p.name.startswith(".")]
    return found


def check_store(run_dir: Path, planned: set[str]) -> None:
    """Every planned trial done exactly once, in the store and in results.jsonl; intact."""
    with closing(sqlite3.connect(run_dir / "trialrun.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        records = [row[0] for row in conn.execute("SELECT trial_id FROM records")]
        states = Counter(dict(conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state")))
    assert Counter(records) == Counter(planned)  # each planned id once, no other
    assert states == {"done": len(planned)}
    lines = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert Counter(r["trial_id"] for r in lines) == Counter(planned)


def planned_ids(path: Path) -> set[str]:
    prepared = trialrun.load(path)
    return {t.trial_id for t in expand(prepared.experiment, prepared.dataset.ids)}


def kill_storm(first: list[str], then: list[str], rng: random.Random, kills: int) -> int:
    """Start `first`, kill -9 it at a random moment once its run folder exists, then `then`
    (a resume) again and again, each killed at a random moment too."""
    args = first
    killed = 0
    for _ in range(kills):
        process = spawn(*args)
        deadline = time.monotonic() + 60
        while not list(Path("runs").glob("*/trialrun.db")) and time.monotonic() < deadline:
            time.sleep(0.05)  # a kill before the run folder exists leaves nothing to resume
        time.sleep(rng.uniform(0.1, 1.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.communicate(timeout=60)
        args = then
    return killed


@pytest.mark.slow
def test_kill_storm_in_real_time_under_a_ten_percent_fault_mix(server: FakeServer) -> None:
    server.set_faults(Faults.mix(0.10, seed=1))
    server.latency_s = 0.02
    items = 1000 if LONG else 300
    path = Path("storm.yaml")
    path.write_text(yaml.safe_dump(config(server, items)))
    rng = random.Random(11)
    killed = kill_storm(["run", str(path), "--quiet"], ["resume", "--quiet"], rng, KILLS)
    assert killed == KILLS  # each one died mid-run, not after finishing
    final = spawn("resume", "--quiet")
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    check_store(the_run(), planned_ids(path))


@pytest.mark.slow
def test_kill_storm_during_batch_collect_never_submits_twice(isolated: Path) -> None:
    with FakeServer(
        "openai",
        api_key=KEY,
        record=False,
        batch_delay_s=0.3,
        batch_faults=BatchFaults(error=0.1, expire=0.05, seed=2),
    ) as server:
        items = 400 if LONG else 100
        batch_config = config(
            server, items, mode="batch", batch={"poll_min_s": 0.05, "poll_max_s": 0.1}
        )
        path = Path("storm.yaml")
        path.write_text(yaml.safe_dump(batch_config))
        rng = random.Random(5)
        killed = kill_storm(
            ["run", str(path), "--wait", "--quiet"], ["collect", "--wait", "--quiet"], rng, KILLS
        )
        assert killed == KILLS
        final = spawn("collect", "--wait", "--quiet")
        _, err = final.communicate(timeout=300)
        assert final.returncode == 0, err
        check_store(the_run(), planned_ids(path))
        # No request was answered twice: each one succeeded in exactly one batch.
        succeeded: Counter[str] = Counter()
        for batch in server.batches.values():
            for custom_id, outcome in batch["outcomes"].items():
                if outcome == "ok" and batch.get("results", {}).get(custom_id) != "canceled":
                    succeeded[custom_id] += 1
        assert succeeded and max(succeeded.values()) == 1, succeeded.most_common(3)


# ------------------------------------------------------------------ servers that misbehave


def run_against(server: FakeServer, **changes: Any) -> tuple[int, str, float]:
    path = Path("bad.yaml")
    path.write_text(yaml.safe_dump(config(server, 5, **changes)))
    started = time.monotonic()
    process = spawn("run", str(path), "--quiet")
    _, err = process.communicate(timeout=120)
    return process.returncode, err, time.monotonic() - started


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (Faults(slow=1.0, slow_s=30), "timed out"),
        (Faults(malformed=1.0), "not JSON"),
        (Faults(truncate=1.0), "closed mid-body"),
        (Faults(drop=1.0), "gave up after 2 attempts"),
    ],
    ids=["hangs", "garbage", "closes-mid-body", "drops"],
)
def test_a_server_that_never_answers_properly_fails_trials_with_reasons(
    server: FakeServer, faults: Faults, expected: str
) -> None:
    server.set_faults(faults)
    retry = {"attempts": 2, "base_wait_s": 0.01, "max_wait_s": 0.02, "timeout_s": 0.5}
    code, err, seconds = run_against(server, retry=retry)
    assert "Traceback" not in err
    assert code == 1, err  # the run ends; every trial failed, each with its reason
    assert "every trial of" in err
    assert seconds < 60
    records = [json.loads(x) for x in (the_run() / "results.jsonl").read_text().splitlines()]
    assert len(records) == 10 and {r["status"] for r in records} == {"failed"}
    assert all(expected in r["error"] and "gave up after 2 attempts" in r["error"] for r in records)


def test_a_server_that_misbehaves_a_third_of_the_time_still_gets_everything_done(
    server: FakeServer,
) -> None:
    server.set_faults(Faults(truncate=0.1, malformed=0.1, drop=0.1, slow=0.03, slow_s=5, seed=4))
    retry = {"attempts": 20, "base_wait_s": 0.005, "max_wait_s": 0.02, "timeout_s": 0.5}
    code, err, _ = run_against(server, retry=retry)
    assert code == 0, err
    records = [json.loads(x) for x in (the_run() / "results.jsonl").read_text().splitlines()]
    assert {r["status"] for r in records} == {"done"} and len(records) == 10


# ------------------------------------------------------------------ the disk fills up


@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_and_the_store_resumes(server: FakeServer) -> None:
    path = Path("disk.yaml")
    path.write_text(yaml.safe_dump(config(server, 400, limits={"openai": {"concurrency": 4}})))
    # Room for the plan, not for every record: writing fails with EFBIG mid-run.
    process = spawn("run", str(path), "--quiet", limit_bytes=900_000)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1, (out, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "disk is full" in lines[0] and "trialrun resume" in lines[0]
    run_dir = the_run()
    with closing(sqlite3.connect(run_dir / "trialrun.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        done_before = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    assert 0 < done_before < 800
    resumed = spawn("resume", "--quiet")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    check_store(run_dir, planned_ids(path))
