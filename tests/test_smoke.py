"""The quickstart runs end to end through the CLI and leaves a complete run folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import ROOT, only_run, read_results


def test_quickstart_runs_every_trial_and_prints_summary(tmp_path: Path, cli) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    result = cli("run", "examples/quickstart.yaml", "mock.latency_s=0", "mock.jitter_s=0")
    assert result.code == 0, result.err
    run_dir = only_run(tmp_path / "runs")
    records = read_results(run_dir)
    assert len(records) == 8 * 3 * 2 * 2
    assert {r["status"] for r in records} == {"done"}
    assert all(len(r["turns"]) == 2 for r in records)
    assert "96 done, 0 failed" in result.out
    assert str(run_dir.name) in result.out
    for name in ("trialrun.db", "config.yaml", "manifest.json", "results.jsonl"):
        assert (run_dir / name).is_file()


def test_the_batch_example_runs_offline_to_the_end(cli, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    overrides = ("mock.batch_delay_s=0", "batch.poll_min_s=0.01", "batch.poll_max_s=0.05")
    result = cli("run", "examples/batch.yaml", *overrides)
    assert result.code == 0, result.err
    assert "trialrun collect" in result.out
    result = cli("collect", "--wait")
    assert result.code == 0, result.err
    assert "32 done, 0 failed" in result.out
