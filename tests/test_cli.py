"""The command line end to end, in-process: run, plan, status, ls, export, doctor, help."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import trialrun
from conftest import CliResult, base_config, only_run, read_results, trialrun_subprocess
from trialrun.hashing import content_hash
from trialrun.plan import expand

SECRET = "sk-test-5f1c9e-do-not-print"


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the rich tables in `text`, as lists of stripped cell texts."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if line.startswith("│")
    ]


def status_counts(text: str) -> dict[str, int]:
    """`status`'s counts by column name (the columns depend on whether the run is live)."""
    rows = table_rows(text)
    assert len(rows) == 1, text
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    names = [cell.strip() for cell in header.strip().strip("┃").split("┃")]
    return {name: int(value.replace(",", "")) for name, value in zip(names, rows[0], strict=True)}


def run_folders(runs_dir: Path) -> list[Path]:
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if not p.name.startswith("."))


def planned_ids(config: Path, *overrides: str) -> list[str]:
    prepared = trialrun.load(config, list(overrides))
    item_ids = prepared.dataset.ids
    return [trial.trial_id for trial in expand(prepared.experiment, item_ids)]


def every_file(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# ------------------------------------------------------------------ run


def test_run_prints_summary_table_and_run_folder_path(tmp_path: Path, write_config, cli) -> None:
    config = write_config()
    result = cli("run", str(config))
    assert result.code == 0, result.err
    run_dir = only_run(tmp_path / "runs")
    assert "16 done, 0 failed" in result.out
    assert str(Path("runs") / run_dir.name) in result.out
    headers = ("model", "cell", "done", "failed", "tokens", "cost")
    assert all(h in result.out for h in headers)
    rows = table_rows(result.out)
    assert [row[0] for row in rows] == ["mock/alpha", "mock/alpha", "mock/beta", "mock/beta"]
    assert sum(int(row[2]) for row in rows) == 16
    records = read_results(run_dir)
    assert len(records) == 16
    assert {r["status"] for r in records} == {"done"}


def test_run_summary_table_shows_each_cell_value(write_config, cli) -> None:
    result = cli("run", str(write_config()))
    assert result.code == 0, result.err
    cells = [row[1] for row in table_rows(result.out)]
    assert cells == ["temperature=0.0", "temperature=0.7"] * 2, result.out


def test_run_with_limit_runs_only_the_first_n_trials(tmp_path: Path, write_config, cli) -> None:
    config = write_config()
    result = cli("run", str(config), "--limit", "5")
    assert result.code == 0, result.err
    run_dir = only_run(tmp_path / "runs")
    records = read_results(run_dir)
    assert [r["trial_id"] for r in records] == planned_ids(config)[:5]
    assert trialrun.open_run(run_dir).counts()["done"] == 5
    assert sum(trialrun.open_run(run_dir).counts().values()) == 5


def test_shards_together_cover_every_trial_exactly_once(tmp_path: Path, write_config, cli) -> None:
    config = write_config()
    for shard in ("0/2", "1/2"):
        result = cli("run", str(config), "--shard", shard)
        assert result.code == 0, result.err
    folders = run_folders(tmp_path / "runs")
    assert len(folders) == 2
    shard_ids = [[r["trial_id"] for r in read_results(folder)] for folder in folders]
    assert all(ids for ids in shard_ids), "each shard should get some of 16 trials"
    combined = shard_ids[0] + shard_ids[1]
    assert len(combined) == len(set(combined)) == 16
    assert set(combined) == set(planned_ids(config))


def test_shard_outside_range_is_a_usage_error(tmp_path: Path, write_config, cli) -> None:
    result = cli("run", str(write_config()), "--shard", "2/2")
    assert result.code == 2
    assert "--shard" in result.err
    assert run_folders(tmp_path / "runs") == []


def test_mock_flag_runs_api_models_offline_and_keeps_their_names(
    tmp_path: Path, write_config, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIALRUN_TEST_OPENAI_KEY", raising=False)
    models = [
        {"model": "openai/x", "api_key": "${env:TRIALRUN_TEST_OPENAI_KEY}"},
        {"model": "anthropic/y"},
    ]
    config = write_config(models=models)
    result = cli("run", str(config), "--mock")
    assert result.code == 0, result.err
    records = read_results(only_run(tmp_path / "runs"))
    assert len(records) == 16
    assert {r["model"] for r in records} == {"openai/x", "anthropic/y"}
    assert {r["status"] for r in records} == {"done"}


def test_api_models_without_mock_flag_are_refused_before_anything_is_written(
    tmp_path: Path, write_config, cli
) -> None:
    config = write_config(models=[{"model": "openai/x"}, {"model": "anthropic/y"}])
    result = cli("run", str(config))
    assert result.code == 2
    assert "openai" in result.err and "--mock" in result.err
    assert not (tmp_path / "runs").exists()


def test_several_configs_in_one_process_give_one_run_folder_each(tmp_path: Path, cli) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(base_config(name="exp-a")))
    b.write_text(yaml.safe_dump(base_config(name="exp-b", repeats=2)))
    result = cli("run", str(a), str(b))
    assert result.code == 0, result.err
    folders = run_folders(tmp_path / "runs")
    assert len(folders) == 2
    by_name = {folder.name.split("-20")[0]: folder for folder in folders}
    assert set(by_name) == {"exp-a", "exp-b"}
    assert len(read_results(by_name["exp-a"])) == 16
    assert len(read_results(by_name["exp-b"])) == 32
    for folder in folders:
        assert str(Path("runs") / folder.name) in result.out


def test_multirun_gives_one_run_folder_per_override_value(
    tmp_path: Path, write_config, cli
) -> None:
    result = cli("run", str(write_config()), "repeats=1,2", "--multirun")
    assert result.code == 0, result.err
    folders = run_folders(tmp_path / "runs")
    assert len(folders) == 2
    counts = sorted(len(read_results(folder)) for folder in folders)
    assert counts == [16, 32]
    repeats = sorted(trialrun.open_run(folder).experiment().repeats for folder in folders)
    assert repeats == [1, 2]


def test_override_on_command_line_changes_the_plan(tmp_path: Path, write_config, cli) -> None:
    result = cli("run", str(write_config()), "repeats=3", "mock.latency_s=0")
    assert result.code == 0, result.err
    records = read_results(only_run(tmp_path / "runs"))
    assert len(records) == 48
    assert {r["repeat"] for r in records} == {0, 1, 2}


# ------------------------------------------------------------------ plan


def test_plan_prints_trial_and_request_counts_and_writes_nothing(
    tmp_path: Path, write_config, cli
) -> None:
    config = write_config()
    before = every_file(tmp_path)
    result = cli("plan", str(config))
    assert result.code == 0, result.err
    assert "trials" in result.out and "requests" in result.out
    rows = table_rows(result.out)
    # experiment, items, models, cells, repeats, turns, trials, requests
    assert rows == [["t", "4", "2", "2", "1", "2", "16", "32"]]
    assert every_file(tmp_path) == before


def test_plan_counts_follow_overrides_and_limit(write_config, cli) -> None:
    config = str(write_config())
    rows = table_rows(cli("plan", config, "repeats=3").out)
    assert rows[0][-2:] == ["48", "96"]
    rows = table_rows(cli("plan", config, "--limit", "5").out)
    assert rows[0][-2:] == ["5", "10"]


# ------------------------------------------------------------------ status and ls


def test_status_by_path_shows_done_of_total(write_config, cli) -> None:
    assert cli("run", str(write_config())).code == 0
    run_dir = only_run(Path("runs"))
    result = cli("status", str(run_dir))
    assert result.code == 0, result.err
    assert run_dir.name in result.out
    assert "finished" in result.out
    assert status_counts(result.out) == {"pending": 0, "done": 16, "failed": 0, "total": 16}
    assert "calls 32" in result.out


def test_status_by_id_with_dir_finds_run_in_other_output_folder(write_config, cli) -> None:
    assert cli("run", str(write_config()), "output.dir=elsewhere").code == 0
    run_dir = only_run(Path("elsewhere"))
    missing = cli("status", run_dir.name)
    assert missing.code == 2
    assert run_dir.name in missing.err
    result = cli("status", run_dir.name, "--dir", "elsewhere")
    assert result.code == 0, result.err
    assert status_counts(result.out)["done"] == 16


def test_status_without_run_shows_the_latest_run(write_config, cli) -> None:
    assert cli("run", str(write_config()), "--limit", "3").code == 0
    run_dir = only_run(Path("runs"))
    result = cli("status")
    assert result.code == 0, result.err
    assert run_dir.name in result.out
    counts = status_counts(result.out)
    assert (counts["done"], counts["total"]) == (3, 3)


def test_status_of_a_stopped_run_shows_pending_and_how_to_continue(write_config, cli) -> None:
    run = trialrun.api.create_run(trialrun.load(write_config()))
    result = cli("status", str(run.path))
    assert result.code == 0, result.err
    assert status_counts(result.out) == {"pending": 16, "done": 0, "failed": 0, "total": 16}
    assert "trialrun resume" in result.out


def test_status_with_no_runs_is_a_usage_error(cli) -> None:
    result = cli("status")
    assert result.code == 2
    assert "no runs" in result.err


def test_ls_lists_every_run_with_its_counts(write_config, cli) -> None:
    assert cli("ls").out.startswith("no runs under runs")
    config = str(write_config())
    assert cli("run", config).code == 0
    assert cli("run", config, "--limit", "4").code == 0
    folders = run_folders(Path("runs"))
    result = cli("ls")
    assert result.code == 0, result.err
    rows = {row[0]: row[1:] for row in table_rows(result.out)}
    assert set(rows) == {folder.name for folder in folders}
    assert sorted(tuple(r) for r in rows.values()) == [
        ("finished", "16", "0", "0", "16", "no", "-"),
        ("finished", "4", "0", "0", "4", "no", "-"),
    ]


def test_ls_shows_each_multirun_variants_overrides_and_the_mock_flag(write_config, cli) -> None:
    config = str(write_config())
    assert cli("run", config, "repeats=1,2", "grid.temperature=[0.5]", "--multirun").code == 0
    assert cli("run", config, "--mock", "--limit", "2").code == 0
    result = cli("ls")
    assert result.code == 0, result.err
    assert sorted(tuple(row[1:]) for row in table_rows(result.out)) == [
        ("finished", "16", "0", "0", "16", "no", "repeats=2 grid.temperature=[0.5]"),
        ("finished", "2", "0", "0", "2", "yes", "-"),
        ("finished", "8", "0", "0", "8", "no", "repeats=1 grid.temperature=[0.5]"),
    ]


# ------------------------------------------------------------------ export


def test_export_jsonl_to_stdout_equals_results_file(write_config, cli) -> None:
    assert cli("run", str(write_config())).code == 0
    run_dir = only_run(Path("runs"))
    result = cli("export", str(run_dir), "--format", "jsonl")
    assert result.code == 0, result.err
    exported = [json.loads(line) for line in result.out.splitlines()]
    assert exported == read_results(run_dir)
    assert len(exported) == 16


def test_export_jsonl_to_file_equals_results_file(write_config, cli) -> None:
    assert cli("run", str(write_config())).code == 0
    run_dir = only_run(Path("runs"))
    result = cli("export", "--format", "jsonl", "-o", "out.jsonl")
    assert result.code == 0, result.err
    assert result.out == ""
    exported = [json.loads(line) for line in Path("out.jsonl").read_text().splitlines()]
    assert exported == read_results(run_dir)
    assert "16" in result.err


def test_export_csv_has_one_row_per_trial_with_grid_item_and_last_response(
    write_config, cli
) -> None:
    assert cli("run", str(write_config())).code == 0
    run_dir = only_run(Path("runs"))
    result = cli("export", str(run_dir), "--format", "csv")
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    records = {r["trial_id"]: r for r in read_results(run_dir)}
    assert len(rows) == 16
    assert {row["trial_id"] for row in rows} == set(records)
    for row in rows:
        record = records[row["trial_id"]]
        assert float(row["grid.temperature"]) == record["grid"]["temperature"]
        assert row["item.category"] == record["item"]["category"]
        assert row["response"] == record["turns"][-1]["response"]
        assert row["turn1.response"] == record["turns"][0]["response"]
        assert row["model"] == record["model"]
        assert row["status"] == "done"
    assert {row["grid.temperature"] for row in rows} == {"0.0", "0.7"}


# ------------------------------------------------------------------ doctor


def test_doctor_passes_on_a_healthy_machine(cli) -> None:
    result = cli("doctor")
    assert result.code == 0, result.out
    assert "python" in result.out
    assert "FAIL" not in result.out


def test_doctor_reports_a_missing_key_without_printing_any_value(
    write_config, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = [{"model": "mock/alpha", "api_key": "${env:TRIALRUN_TEST_SOME_KEY}"}]
    config = str(write_config(models=models))

    monkeypatch.delenv("TRIALRUN_TEST_SOME_KEY", raising=False)
    missing = cli("doctor", config)
    assert missing.code == 1
    line = next(x for x in missing.out.splitlines() if "TRIALRUN_TEST_SOME_KEY" in x)
    assert "not set" in line and "FAIL" in line

    monkeypatch.setenv("TRIALRUN_TEST_SOME_KEY", SECRET)
    present = cli("doctor", config)
    assert present.code == 0, present.out
    line = next(x for x in present.out.splitlines() if "TRIALRUN_TEST_SOME_KEY" in x)
    assert line.rstrip().endswith(": set")
    assert SECRET not in present.out + present.err


# ------------------------------------------------------------------ help


@pytest.mark.parametrize(
    ("command", "purpose"),
    [
        ("run", "Run experiments"),
        ("plan", "Show what a config would run"),
        ("status", "Progress of RUN"),
        ("resume", "Continue stopped or crashed RUNs"),
        ("collect", "Advance a batch-mode RUN one step"),
        ("export", "Export RUN"),
        ("ls", "List the runs"),
        ("doctor", "Check Python"),
    ],
)
def test_help_of_each_command_states_its_purpose(cli, command: str, purpose: str) -> None:
    result = cli(command, "--help")
    assert result.code == 0, result.err
    assert purpose in result.out
    assert f"trialrun {command}" in result.out


def test_top_level_help_lists_every_command(cli) -> None:
    result = cli("--help")
    assert result.code == 0
    for command in ("run", "plan", "status", "resume", "export", "ls", "doctor"):
        assert command in result.out


# ------------------------------------------------------------------ run folder contents


def test_run_folder_keeps_env_references_and_never_resolved_secrets(
    tmp_path: Path, write_config, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIALRUN_TEST_SECRET", SECRET)
    monkeypatch.setenv("TRIALRUN_TEST_URL", f"http://{SECRET}.invalid/v1")
    models = [
        {
            "model": "mock/alpha",
            "api_key": "${env:TRIALRUN_TEST_SECRET}",
            "base_url": "${env:TRIALRUN_TEST_URL}",
            "options": {"token": "${env:TRIALRUN_TEST_SECRET}"},
        },
        {"model": "mock/beta"},
    ]
    result = cli("run", str(write_config(models=models)))
    assert result.code == 0, result.err
    run_dir = only_run(tmp_path / "runs")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["models"][0]["api_key"] == "${env:TRIALRUN_TEST_SECRET}"
    assert saved["models"][0]["base_url"] == "${env:TRIALRUN_TEST_URL}"
    assert saved["models"][0]["options"] == {"token": "${env:TRIALRUN_TEST_SECRET}"}
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    cache = tmp_path / "cache"
    for path in cache.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in result.out + result.err


def test_unset_env_reference_fails_before_a_run_folder_is_written(
    tmp_path: Path, write_config, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIALRUN_TEST_UNSET_URL", raising=False)
    models = [{"model": "mock/alpha", "base_url": "${env:TRIALRUN_TEST_UNSET_URL}"}]
    result = cli("run", str(write_config(models=models)))
    assert result.code == 2
    assert "TRIALRUN_TEST_UNSET_URL" in result.err
    assert run_folders(tmp_path / "runs") == [], "a failed start must leave no run folder"


def test_manifest_records_hashes_versions_and_seed(tmp_path: Path, write_config, cli) -> None:
    config = write_config()
    assert cli("run", str(config)).code == 0
    assert cli("run", str(config)).code == 0
    assert cli("run", str(config), "repeats=2").code == 0
    manifests = {}
    for folder in run_folders(tmp_path / "runs"):
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["run_id"] == folder.name
        assert manifest["seed"] == 7
        assert manifest["versions"]["trialrun"] == trialrun.__version__
        assert all(manifest["versions"][name] for name in ("pydantic", "PyYAML", "click"))
        assert manifest["python"]
        assert set(manifest["hashes"]) >= {"config", "data"}
        assert all(len(h) == 64 for h in manifest["hashes"].values())
        repeats = trialrun.open_run(folder).experiment().repeats
        manifests.setdefault(repeats, []).append(manifest["hashes"])
    same = manifests[1]
    assert len(same) == 2 and same[0] == same[1], "the same config must hash the same"
    assert manifests[2][0]["config"] != same[0]["config"]
    assert manifests[2][0]["data"] == same[0]["data"]
    experiment = trialrun.load(config).experiment
    assert same[0]["config"] == content_hash(experiment.model_dump(mode="json"))


def _status_while_running(
    cli: Callable[..., CliResult], config: Path, isolated: Path, until: Callable[[str], bool]
) -> str:
    """Start `trialrun run config` in a process and return the first `status` output for
    which `until` holds (the process is then stopped)."""
    proc = trialrun_subprocess("run", str(config), "--quiet", cwd=isolated)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if run_folders(isolated / "runs"):
                out = cli("status").out
                if until(out):
                    return out
            time.sleep(0.1)
        raise AssertionError(f"status never showed it: {out}")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.slow
def test_status_of_a_live_run_shows_requests_in_flight_apart_from_queued_trials(
    write_config, cli, isolated: Path
) -> None:
    config = write_config(mock={"latency_s": 0.5}, limits={"mock": {"concurrency": 3}})
    out = _status_while_running(
        cli, config, isolated, lambda text: "in flight" in text and "running" in text
    )
    counts = status_counts(out)
    assert 1 <= counts["in flight"] <= 3  # the concurrency, not the trials claimed
    assert counts["queued"] >= 1
    assert sum(counts[k] for k in ("pending", "queued", "in flight", "done", "failed")) == 16


@pytest.mark.slow
def test_status_shows_a_lane_waiting_out_a_retry_after(write_config, cli, isolated: Path) -> None:
    config = write_config(
        mock={"errors": {"rate_limit": 1.0}, "retry_after_s": 3600},
        retry={"attempts": 3, "max_wait_s": 20},
    )
    out = _status_while_running(cli, config, isolated, lambda text: "waiting" in text)
    assert "mock: waiting" in out and "Retry-After" in out
    assert "capped at retry.max_wait_s" in out  # the event
