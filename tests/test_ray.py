"""`executor: {ray: ...}`: local-model trials on the actors of a real Ray cluster.

One local cluster per test session (`ray start --head --block` on loopback, its own temp
folder, killed with its process group at the end). Each test runs a tiny random-weight model
(trialrun.local.tiny) both in this process and on Ray, and compares; one kills an actor's
process mid-run and checks that its trials are redone on a replacement, each exactly once.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

if importlib.util.find_spec("ray") is None:  # not imported here: see LOOPBACK_ENV
    pytest.skip("executor.ray: pip install 'trialrun[ray]'", allow_module_level=True)
pytest.importorskip("torch", reason="the local extra: pip install torch==2.13.0")
pytest.importorskip("transformers", reason="the local extra: pip install 'trialrun[local]'")

import trialrun
from conftest import ROOT, base_config, read_results, trialrun_subprocess
from trialrun.local.tiny import build_tiny_model

LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
}
"""Ray reads the first when it is imported, so this module never imports it at collection:
without it Ray swaps 127.0.0.1 for the machine's outside address and the driver looks for
the cluster there. The second is for the cluster and every driver alike: left unset, `ray
start` turns token auth on when ~/.ray/auth_token exists and a driver given HOST:PORT
then fails with InvalidAuthToken."""
START_S = 60.0


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """A one-node Ray cluster on 127.0.0.1 with 2 CPUs, for the whole session."""
    command = str(Path(sys.executable).parent / "ray")  # the venv's, beside its python
    temp = Path(tempfile.mkdtemp(prefix="tr-ray-", dir="/tmp"))  # short: Ray's socket paths
    env = {**os.environ, **LOOPBACK_ENV}
    proc = subprocess.Popen(
        [
            command, "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=false",
            "--object-store-memory=200000000", f"--temp-dir={temp}",
            "--node-ip-address=127.0.0.1", "--port=0", "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield _wait_for_address(temp, proc)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=10)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_address(temp: Path, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + START_S
    marker = temp / "ray_current_cluster"
    while time.monotonic() < deadline:
        if marker.is_file() and marker.read_text().strip():
            return marker.read_text().strip()
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}")
        time.sleep(0.1)
    pytest.fail(f"no Ray cluster within {START_S} s")


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in LOOPBACK_ENV.items():
        monkeypatch.setenv(key, value)


def _config(folder: Path, items: int, **extra: Any) -> dict[str, Any]:
    return base_config(
        dataset={"items": [{"id": f"q{i:02d}", "prompt": f"Claim {i}?"} for i in range(items)]},
        models=[{"model": f"hf/{folder}", "options": {"batch_size": 4}}],
        grid={"temperature": [0.0, 0.8]},
        params={"max_tokens": 8, "top_logprobs": 2},
        followups=[],
        **extra,
    )


def _by_trial(path: Path) -> dict[str, dict[str, Any]]:
    return {r["trial_id"]: r for r in read_results(path)}


def _events(run_dir: Path, kind: str) -> list[str]:
    with closing(sqlite3.connect(f"file:{run_dir / 'trialrun.db'}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT detail FROM events WHERE kind = ?", (kind,)).fetchall()
    return [detail for (detail,) in rows]


def _same_answer(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours["status"] == theirs["status"] == "done"
    turn, their_turn = ours["turns"][0], theirs["turns"][0]
    for key in ("response", "usage", "finish_reason", "served_model"):
        assert turn[key] == their_turn[key]
    mine, other = turn["logprobs"], their_turn["logprobs"]
    assert [t["token"] for t in mine] == [t["token"] for t in other]
    for a, b in zip(mine, other, strict=True):
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-4)


def test_ray_gives_the_records_the_in_process_executor_gives(
    tmp_path: Path, ray_address: str
) -> None:
    folder = build_tiny_model(tmp_path / "tiny")
    config = _config(folder, items=6)
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(config))
    config["executor"] = {"ray": {"address": ray_address, "actors": 2, "cpus_per_actor": 0.5}}
    (tmp_path / "ray.yaml").write_text(yaml.safe_dump(config))

    local = _by_trial(trialrun.run(str(tmp_path / "local.yaml")).path)
    on_ray = trialrun.run(str(tmp_path / "ray.yaml"))
    remote = _by_trial(on_ray.path)

    assert set(remote) == set(local) and len(local) == 12
    for trial_id, record in remote.items():
        _same_answer(record, local[trial_id])
    loaded = _events(on_ray.path, "ray_actor")
    assert len(loaded) == 2 and all("loaded on 127.0.0.1" in note for note in loaded)
    pids = {note.split("pid ")[1].split(",")[0] for note in loaded}
    assert len(pids) == 2 and str(os.getpid()) not in pids  # two actors, neither us


def test_a_killed_actor_s_trials_are_redone_on_a_replacement(
    tmp_path: Path, ray_address: str
) -> None:
    folder = build_tiny_model(tmp_path / "tiny")
    config = _config(folder, items=60, executor={"ray": {"address": ray_address}})
    config["params"]["max_tokens"] = 16
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    proc = trialrun_subprocess("run", "exp.yaml", "--quiet", cwd=tmp_path)
    try:
        killed = _kill_the_actor_mid_run(tmp_path / "runs", proc)
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    run_dir = next((tmp_path / "runs").iterdir())
    records = read_results(run_dir)
    assert len(records) == 120 and {r["status"] for r in records} == {"done"}
    assert len({r["trial_id"] for r in records}) == 120  # each trial once
    with closing(sqlite3.connect(run_dir / "trialrun.db")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 120
    lost = _events(run_dir, "ray_actor_lost")
    assert len(lost) == 1 and f"pid {killed}" in lost[0] and "go to actor 2" in lost[0]
    loaded = _events(run_dir, "ray_actor")
    assert [note.split(":")[1].split(" loaded")[0] for note in loaded] == [
        " actor 1",
        " actor 2",
    ]


def _kill_the_actor_mid_run(runs: Path, proc: subprocess.Popen[str]) -> int:
    """SIGKILL the actor's process once some trials are committed and most are not."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list(runs.iterdir()) if runs.is_dir() else []
        db = found[0] / "trialrun.db" if found else None
        if db is not None and db.is_file():
            try:
                loaded = _events(found[0], "ray_actor")
                with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                    done = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            except sqlite3.Error:
                loaded, done = [], 0
            if loaded and done >= 4:
                assert done < 100, f"{done} of 120 done before the kill: make the run longer"
                pid = int(loaded[0].split("pid ")[1].split(",")[0])
                os.kill(pid, signal.SIGKILL)
                return pid
        if proc.poll() is not None:
            pytest.fail(f"the run ended ({proc.returncode}) before its actor was killed")
        time.sleep(0.02)
    pytest.fail("no actor and no committed record within 120 s")


def test_steering_trial_functions_run_on_the_actors(tmp_path: Path, ray_address: str) -> None:
    """The introspection example's trial (a concept vector, then a steered generation via
    ctx.exclusive) gives the same outputs on Ray as in this process."""
    folder = build_tiny_model(tmp_path / "tiny", layers=6)
    overrides = [f"models.0.model=hf/{folder}", "grid.layer=[0.5]", "grid.strength=[4.0]"]
    overrides.append("params.max_tokens=8")
    config = str(ROOT / "examples" / "introspection.yaml")
    local = _by_trial(trialrun.run(config, overrides, limit=4).path)
    ray_overrides = [*overrides, f"executor.ray.address={ray_address}"]
    remote = _by_trial(trialrun.run(config, ray_overrides, limit=4).path)
    assert set(remote) == set(local) and len(local) == 4
    for trial_id, record in remote.items():
        assert record["status"] == "done", record.get("error")
        mine, theirs = record["output"], local[trial_id]["output"]
        assert mine["response"] == theirs["response"]
        assert mine["injection"]["vector_sha256"] == theirs["injection"]["vector_sha256"]
        ratio = mine["injection"]["relative_norm"]
        assert ratio == pytest.approx(theirs["injection"]["relative_norm"], rel=1e-4)


def test_an_actor_the_cluster_cannot_place_fails_its_trials_in_one_line(
    tmp_path: Path, ray_address: str
) -> None:
    folder = build_tiny_model(tmp_path / "tiny")
    config = _config(
        folder, items=2, executor={"ray": {"address": ray_address, "gpus_per_actor": 1}}
    )
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    records = read_results(trialrun.run(str(tmp_path / "exp.yaml")).path)
    assert len(records) == 4 and {r["status"] for r in records} == {"failed"}
    assert (
        records[0]["error"]
        .splitlines()[0]
        .endswith(
            "did not start on Ray: executor.ray: an actor asks for 1 GPUs and the cluster has 0; "
            "lower gpus_per_actor (0 runs on CPU)"
        )
    )


def test_an_address_where_no_cluster_answers_fails_the_trials_in_one_line(
    tmp_path: Path,
) -> None:
    """Ray itself would retry such an address for many minutes."""
    folder = build_tiny_model(tmp_path / "tiny")
    config = _config(folder, items=1, executor={"ray": {"address": "127.0.0.1:9"}})
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    started = time.monotonic()
    records = read_results(trialrun.run(str(tmp_path / "exp.yaml")).path)
    assert time.monotonic() - started < 30
    assert {r["status"] for r in records} == {"failed"}
    first = records[0]["error"].splitlines()[0]
    assert "executor.ray.address 127.0.0.1:9: no Ray cluster answers there" in first
