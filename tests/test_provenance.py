"""Provenance: manifest fields and hashes, records' version and config hash, `verify`,
doctor's dataset check and warnings kept in the run's events."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import yaml

import trialrun
from conftest import CliResult, base_config, only_run, read_results
from trialrun.provenance import finish


def _write_run_files(tmp_path: Path) -> Path:
    """A config with a dataset file, a follow-up and a judge prompt file."""
    (tmp_path / "data.jsonl").write_text(
        "".join(
            json.dumps({"id": f"q{i}", "prompt": f"Is claim {i} true?"}) + "\n" for i in range(3)
        )
    )
    (tmp_path / "grade.md").write_text("Grade: {{ response }}\n")
    config = base_config(
        dataset={"path": "data.jsonl"},
        followups=["Sure?"],
        models=[{"model": "mock/alpha"}],
        grid={},
        judge={"model": "mock/judge", "prompt": "grade.md", "schema": {"answer": ["pass", "fail"]}},
    )
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_names_files_templates_gpu_and_end(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    config = _write_run_files(tmp_path)
    assert cli("run", str(config), "-q").code == 0
    run = only_run(tmp_path / "runs")
    manifest = json.loads((run / "manifest.json").read_text())
    files = {f["role"]: f for f in manifest["files"]}
    assert files["config"]["sha256"] == sha(config)
    assert files["dataset"]["sha256"] == sha(tmp_path / "data.jsonl")
    assert files["judge prompt judge"]["sha256"] == sha(tmp_path / "grade.md")
    templates = manifest["templates"]
    assert len(templates["messages"]) == 2
    assert templates["followups"] == [hashlib.sha256(b"Sure?").hexdigest()]
    assert templates["judges"]["judge"] == sha(tmp_path / "grade.md")
    assert "gpu" in manifest  # null on a machine with no GPU
    assert manifest["finished_at"] is not None
    assert manifest["stopped_at"] >= manifest["created_at"]
    assert manifest["trialrun_version"] == trialrun.__version__


def test_records_carry_the_version_and_the_config_hash() -> None:
    run = trialrun.run(base_config())
    meta = run.meta()
    for record in read_results(run.path):
        assert record["trialrun_version"] == trialrun.__version__
        assert record["config_hash"] == meta["hashes"]["config"]


def test_scorer_spec_and_function_module_are_hashed(tmp_path: Path) -> None:
    (tmp_path / "myscorers.py").write_text("def yes(item, record):\n    return True\n")
    config = base_config(scores={"yes": {"function": "myscorers:yes"}, "r": {"regex": "y"}})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    run = trialrun.run(path)
    manifest = json.loads((run.path / "manifest.json").read_text())
    scores = manifest["templates"]["scores"]
    assert set(scores) == {"yes", "r"}
    assert scores["yes"]["module_sha256"] == sha(tmp_path / "myscorers.py")
    assert scores["r"].get("module") is None


def test_a_dirty_git_tree_records_the_hash_of_its_diff(tmp_path: Path) -> None:
    import subprocess

    repo = tmp_path / "repo"  # runs/ and the cache stay outside it
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x")
    path = repo / "exp.yaml"
    path.write_text(yaml.safe_dump(base_config()))
    git("add", "exp.yaml")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "config")
    clean = json.loads((trialrun.run(path).path / "manifest.json").read_text())["git"]
    assert clean["dirty"] is False and clean["diff_sha256"] is None
    path.write_text(yaml.safe_dump(base_config(repeats=2)))
    dirty = json.loads((trialrun.run(path).path / "manifest.json").read_text())["git"]
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=repo, capture_output=True).stdout
    assert dirty["dirty"] is True
    assert dirty["diff_sha256"] == hashlib.sha256(diff).hexdigest()


def test_finish_rewrites_the_manifest_whole(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"run_id": "x", "finished_at": None}))
    finish(tmp_path, "2026-01-01T00:00:00.000Z", complete=False)
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data == {"run_id": "x", "finished_at": None, "stopped_at": "2026-01-01T00:00:00.000Z"}
    finish(tmp_path, "2026-01-02T00:00:00.000Z", complete=True)
    assert json.loads((tmp_path / "manifest.json").read_text())["finished_at"].startswith(
        "2026-01-02"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temporary left


# ------------------------------------------------------------------ verify


def _verified(cli: Callable[..., CliResult], run: Path) -> tuple[int, dict[str, str]]:
    result = cli("verify", str(run))
    statuses = {line.what: line.status for line in trialrun.api.verify_run(trialrun.open_run(run))}
    assert result.code in (0, 1)
    return result.code, statuses


def test_verify_passes_on_an_untouched_run(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    config = _write_run_files(tmp_path)
    assert cli("run", str(config), "-q").code == 0
    run = only_run(tmp_path / "runs")
    result = cli("verify", str(run))
    assert result.code == 0, result.out
    assert "all" in result.out and "checks match" in result.out
    _, statuses = _verified(cli, run)
    assert set(statuses.values()) <= {"match", "ok"}
    assert {"config", "dataset", "judge prompt judge", "dataset items", "results.jsonl"} <= set(
        statuses
    )


def test_verify_catches_an_edited_dataset(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    config = _write_run_files(tmp_path)
    cli("run", str(config), "-q")
    run = only_run(tmp_path / "runs")
    with (tmp_path / "data.jsonl").open("a") as handle:
        handle.write(json.dumps({"id": "q9", "prompt": "A new item"}) + "\n")
    code, statuses = _verified(cli, run)
    assert code == 1
    assert statuses["dataset"] == "changed" and statuses["dataset items"] == "changed"
    assert statuses["config"] == "match"
    (tmp_path / "data.jsonl").unlink()
    assert _verified(cli, run)[1]["dataset"] == "missing"


def test_verify_catches_an_edited_template_and_prompt_file(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    config = _write_run_files(tmp_path)
    cli("run", str(config), "-q")
    run = only_run(tmp_path / "runs")
    raw = yaml.safe_load(config.read_text())
    raw["messages"][1]["content"] = "{{ item.prompt }} Answer yes or no."
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "grade.md").write_text("Grade strictly: {{ response }}\n")
    code, statuses = _verified(cli, run)
    assert code == 1
    assert statuses["config"] == "changed"
    assert statuses["template messages[1]"] == "changed"
    assert statuses["template messages[0]"] == "match"
    assert statuses["template followups[0]"] == "match"
    assert statuses["judge prompt judge"] == "changed"
    result = cli("verify", str(run))
    assert "messages[1]" in result.out and "changed" in result.out


def test_verify_catches_a_deleted_record(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    run = trialrun.run(base_config())
    lines = (run.path / "results.jsonl").read_text().splitlines()
    gone = json.loads(lines[2])["trial_id"]
    (run.path / "results.jsonl").write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    result = cli("verify", str(run.path))
    assert result.code == 1
    assert gone in result.out  # the table names the first missing trial
    lines_now = trialrun.api.verify_run(run)
    assert [x.status for x in lines_now if x.what == "results.jsonl"] == ["changed"]
    (run.path / "results.jsonl").write_text("\n".join(lines) + "\n")
    with sqlite3.connect(run.path / "trialrun.db") as db:
        db.execute("DELETE FROM records WHERE trial_id = ?", (gone,))
    statuses = {x.what: x for x in trialrun.api.verify_run(run)}
    assert statuses["records"].status == "changed"
    assert "15 records for 16 finished trials" in statuses["records"].detail


def test_verify_catches_a_missing_planned_trial(tmp_path: Path) -> None:
    run = trialrun.run(base_config())
    with sqlite3.connect(run.path / "trialrun.db") as db:
        db.execute("DELETE FROM records WHERE seq = (SELECT MAX(seq) FROM trials)")
        db.execute("DELETE FROM trials WHERE seq = (SELECT MAX(seq) FROM trials)")
    statuses = {x.what: x for x in trialrun.api.verify_run(run)}
    assert statuses["planned trials"].status == "changed"
    assert statuses["planned trials"].detail == "15 of 16 present"
    assert statuses["trial ids"].status == "changed"
    assert statuses["trial ids"].detail.startswith("1 planned missing (e.g. t_")


def test_verify_catches_a_trial_the_plan_never_made(tmp_path: Path) -> None:
    run = trialrun.run(base_config())
    assert {x.what: x.status for x in trialrun.api.verify_run(run)}["trial ids"] == "ok"
    with sqlite3.connect(run.path / "trialrun.db") as db:
        db.execute("UPDATE trials SET trial_id = 't_forged000000000' WHERE seq = 3")
    statuses = {x.what: x for x in trialrun.api.verify_run(run)}
    assert statuses["trial ids"].status == "changed"
    assert "1 not in the plan (e.g. t_forged000000000)" in statuses["trial ids"].detail


# ------------------------------------------------------------------ doctor and events


def test_doctor_reads_the_dataset_and_counts_its_items(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    config = _write_run_files(tmp_path)
    result = cli("doctor", str(config))
    assert "ok   dataset: data.jsonl: 3 items" in result.out
    (tmp_path / "data.jsonl").write_text('{"id": "q1", "prompt": "x"}\n{"id": \n')
    result = cli("doctor", str(config))
    assert result.code == 1
    assert "FAIL dataset:" in result.out and "data.jsonl:2: invalid JSON" in result.out
    (tmp_path / "data.jsonl").unlink()
    assert "dataset file not found" in cli("doctor", str(config)).out


def test_config_warnings_reach_the_runs_events_even_quiet(
    tmp_path: Path, cli: Callable[..., CliResult], write_config: Callable[..., Path]
) -> None:
    config = write_config(limits={"openia": {"rpm": 5}})
    assert cli("run", str(config), "-q").code == 0
    run = trialrun.open_run(only_run(tmp_path / "runs"))
    with run.store() as store:
        events = store.events(50)
    warnings = [detail for _, kind, detail in events if kind == "warning"]
    assert any("limits.openia" in w for w in warnings), events
