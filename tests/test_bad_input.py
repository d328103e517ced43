"""Bad input through the CLI: exit 2, one `trialrun: error:` line naming the place, nothing written."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import CliResult, base_config, only_run


def assert_usage_error(result: CliResult, *fragments: str) -> str:
    """Exit 2, one stderr line starting `trialrun: error:` holding every fragment, no traceback."""
    err = result.err.strip()
    assert result.code == 2, (result.code, result.err)
    assert "\n" not in err, err
    assert err.startswith("trialrun: error: "), err
    assert "Traceback" not in result.err
    assert result.out.strip() == ""
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def assert_nothing_written(root: Path) -> None:
    """No run folder, and no hidden half-written `.tmp` folder, anywhere under the test's cwd."""
    runs = root / "runs"
    if runs.exists():
        assert list(runs.iterdir()) == []
    assert list(root.rglob("*.tmp")) == []
    assert list(root.rglob("trialrun.db")) == []


def write_text(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- the config file


def test_missing_config_file(cli: Callable[..., CliResult], isolated: Path) -> None:
    assert_usage_error(cli("run", "missing.yaml"), "missing.yaml", "not found")
    assert_nothing_written(isolated)


def test_yaml_syntax_error_names_file_and_line(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    write_text(isolated, "bad.yaml", "name: t\nseed: 1\nmodels: [mock/a, mock/b\nrepeats: 2\n")
    err = assert_usage_error(cli("run", "bad.yaml"), "bad.yaml", "YAML syntax error")
    assert re.search(r"line 4\b", err), err
    assert_nothing_written(isolated)


def test_yaml_with_bad_indentation_names_the_line(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    write_text(isolated, "bad.yaml", "name: t\nmodels:\n  - model: mock/a\n   extra: 1\n")
    err = assert_usage_error(cli("run", "bad.yaml"), "bad.yaml")
    assert re.search(r"line \d+", err), err
    assert_nothing_written(isolated)


def test_undecodable_config_file(cli: Callable[..., CliResult], isolated: Path) -> None:
    (isolated / "binary.yaml").write_bytes(b"name: \xff\xfe\x00\x01\n")
    assert_usage_error(cli("run", "binary.yaml"), "binary.yaml", "cannot read")
    assert_nothing_written(isolated)


def test_config_that_is_a_folder(cli: Callable[..., CliResult], isolated: Path) -> None:
    (isolated / "folder.yaml").mkdir()
    assert_usage_error(cli("run", "folder.yaml"), "folder.yaml")
    assert_nothing_written(isolated)


@pytest.mark.parametrize("text", ["- name: t\n- seed: 1\n", "just text\n", ""])
def test_top_level_not_a_mapping(cli: Callable[..., CliResult], isolated: Path, text: str) -> None:
    write_text(isolated, "list.yaml", text)
    assert_usage_error(cli("run", "list.yaml"), "list.yaml", "expected a mapping")
    assert_nothing_written(isolated)


def test_unknown_key_suggests_the_closest_name(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(repeat=3)
    assert_usage_error(
        cli("run", "exp.yaml"), "exp.yaml", "unknown key 'repeat'", "did you mean 'repeats'"
    )
    assert_nothing_written(isolated)


def test_wrong_type_names_key_and_value(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(repeats="abc")
    assert_usage_error(cli("run", "exp.yaml"), "exp.yaml", "key 'repeats'", "'abc'")
    assert_nothing_written(isolated)


def test_a_task_that_cannot_be_imported_in_a_config_file(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(task="no_such_pkg.mod:fn", followups=[])
    assert_usage_error(cli("run", "exp.yaml"), "exp.yaml", "task", "cannot import no_such_pkg")
    assert_nothing_written(isolated)


def test_duplicate_grid_values_name_the_grid_key(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    """Two equal grid values make two trials with one id: say so by key, not by a temp db path."""
    write_config(grid={"temperature": [0.5, 0.5]})
    err = assert_usage_error(cli("run", "exp.yaml"), "exp.yaml", "temperature")
    assert ".tmp" not in err
    assert_nothing_written(isolated)


# ---------------------------------------------------------------- the dataset


def test_empty_inline_dataset(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(dataset={"items": []})
    assert_usage_error(cli("run", "exp.yaml"), "exp.yaml", "dataset.items", "no items")
    assert_nothing_written(isolated)


def test_empty_dataset_file(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_text(isolated, "items.jsonl", "\n\n")
    write_config(dataset={"path": "items.jsonl"})
    assert_usage_error(cli("run", "exp.yaml"), "items.jsonl", "no items")
    assert_nothing_written(isolated)


def test_missing_dataset_file(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(dataset={"path": "nope.jsonl"})
    assert_usage_error(cli("run", "exp.yaml"), "nope.jsonl", "not found")
    assert_nothing_written(isolated)


def test_duplicate_item_ids_name_both_lines(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    rows = [
        {"id": "a", "prompt": "x", "category": "c"},
        {"id": "b", "prompt": "y", "category": "c"},
    ]
    text = "\n".join(json.dumps(r) for r in [*rows, rows[0]]) + "\n"
    write_text(isolated, "items.jsonl", text)
    write_config(dataset={"path": "items.jsonl"})
    assert_usage_error(
        cli("run", "exp.yaml"), "items.jsonl:3", "duplicate item id 'a'", "items.jsonl:1"
    )
    assert_nothing_written(isolated)


def test_invalid_json_line_in_the_dataset(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_text(isolated, "items.jsonl", '{"id": "a", "prompt": "x", "category": "c"}\n{oops\n')
    write_config(dataset={"path": "items.jsonl"})
    assert_usage_error(cli("run", "exp.yaml"), "items.jsonl:2", "invalid JSON")
    assert_nothing_written(isolated)


def test_item_without_the_id_field(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(dataset={"items": [{"key": "a", "prompt": "x", "category": "c"}]})
    assert_usage_error(cli("run", "exp.yaml"), "dataset.items[0]", "no id field 'id'")
    assert_nothing_written(isolated)


def test_template_referring_to_an_unknown_field(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(messages=[{"role": "user", "content": "{{ item.question }}"}])
    assert_usage_error(cli("run", "exp.yaml"), "exp.yaml", "messages[0].content", "item.question")
    assert_nothing_written(isolated)


def test_template_syntax_error_names_the_followup(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(followups=["{% if item.prompt %}unclosed"])
    assert_usage_error(cli("run", "exp.yaml"), "followups[0]", "syntax error", "line 1")
    assert_nothing_written(isolated)


# ---------------------------------------------------------------- providers


def test_unknown_provider_suggests_mock(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(models=[{"model": "nosuch/gpt-4o"}])
    assert_usage_error(cli("run", "exp.yaml"), "exp.yaml", "models[0].model", "'nosuch'", "--mock")
    assert_nothing_written(isolated)


def test_api_model_without_a_key_names_the_variable_and_mock(
    cli: Callable[..., CliResult],
    write_config: Callable[..., Path],
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    write_config(models=[{"model": "openai/gpt-4o"}])
    assert_usage_error(cli("run", "exp.yaml"), "exp.yaml", "models[0]", "OPENAI_API_KEY", "--mock")
    assert_nothing_written(isolated)


def test_unknown_provider_runs_offline_with_mock(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(models=[{"model": "openai/gpt-4o"}])
    result = cli("run", "exp.yaml", "--mock", "-q")
    assert result.code == 0, result.err
    run_dir = only_run(isolated / "runs")
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4 * 2
    assert {r["status"] for r in records} == {"done"}
    assert {r["model"] for r in records} == {"openai/gpt-4o"}


# ---------------------------------------------------------------- the command line


def test_override_of_a_key_that_does_not_exist(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config()
    assert_usage_error(
        cli("run", "exp.yaml", "retry.attemps=3"),
        "override 'retry.attemps=3'",
        "did you mean 'attempts'",
    )
    assert_nothing_written(isolated)


def test_override_with_a_bad_value(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config()
    assert_usage_error(cli("run", "exp.yaml", "repeats=0"), "override 'repeats=0'", "key 'repeats'")
    assert_nothing_written(isolated)


def test_override_value_that_is_not_valid_yaml_names_the_override_not_the_file(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config()
    err = assert_usage_error(
        cli("run", "exp.yaml", "grid.temperature=[0,0.5"),
        "override 'grid.temperature=[0,0.5'",
        "key 'grid.temperature'",
        "not valid YAML",
    )
    assert "exp.yaml" not in err
    assert_nothing_written(isolated)


def test_override_that_breaks_a_rule_of_the_whole_config_names_it(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config()
    assert_usage_error(
        cli("run", "exp.yaml", "models.1.model=mock/alpha"),
        "override 'models.1.model=mock/alpha'",
        "appears twice",
    )
    assert_nothing_written(isolated)


def test_sampling_param_as_an_override_suggests_params_and_grid(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config()
    assert_usage_error(
        cli("run", "exp.yaml", "temperature=0.3"),
        "override 'temperature=0.3'",
        "did you mean params.temperature or grid.temperature?",
    )
    assert_nothing_written(isolated)


@pytest.mark.parametrize(
    ("args", "meant"),
    [
        (("repeats", "5"), "repeats=5"),
        (("repeats 5",), "repeats=5"),
        (("grid.temperature", "[0,1]"), "grid.temperature=[0,1]"),
        (("seed",), "seed=VALUE"),
    ],
)
def test_key_and_value_without_an_equals_sign_suggest_one(
    cli: Callable[..., CliResult],
    write_config: Callable[..., Path],
    isolated: Path,
    args: tuple[str, ...],
    meant: str,
) -> None:
    write_config()
    err = assert_usage_error(cli("run", "exp.yaml", *args), f"did you mean {meant}?")
    assert "not found" not in err
    assert_nothing_written(isolated)


def test_missing_config_file_named_like_a_key_is_still_not_found(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    """Guard: `grid.yaml` starts with a config key, but it is a file name."""
    assert_usage_error(cli("run", "grid.yaml"), "grid.yaml", "not found")
    assert_nothing_written(isolated)


def test_replacing_the_models_by_override_is_not_refused_for_their_limits(
    cli: Callable[..., CliResult],
    write_config: Callable[..., Path],
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`limits` names only `mock`; after the override no model uses it: a warning, not exit 2."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never-sent")
    write_config(limits={"mock": {"concurrency": 4}})
    plan = cli("plan", "exp.yaml", "models.0.model=openai/x", "models.1.model=openai/y")
    assert plan.code == 0, plan.err
    run = cli("run", "exp.yaml", "models.0.model=openai/x,mock/alpha", "--multirun", "--mock", "-q")
    assert run.code == 0, run.err
    assert len(list((isolated / "runs").iterdir())) == 2


@pytest.mark.parametrize("shard", ["4/4", "x", "-1/4", "1/0", "1"])
def test_bad_shard(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path, shard: str
) -> None:
    write_config()
    assert_usage_error(cli("run", "exp.yaml", "--shard", shard), f"--shard '{shard}'", "I/N")
    assert_nothing_written(isolated)


@pytest.mark.parametrize("command", ["status", "resume", "export"])
def test_folder_that_is_not_a_run(
    cli: Callable[..., CliResult], isolated: Path, command: str
) -> None:
    (isolated / "notarun").mkdir()
    assert_usage_error(cli(command, "notarun"), "notarun", "not a run folder")
    assert_nothing_written(isolated)


@pytest.mark.parametrize("command", ["status", "resume", "export"])
def test_run_id_that_does_not_exist(
    cli: Callable[..., CliResult], isolated: Path, command: str
) -> None:
    assert_usage_error(cli(command, "nosuch-run"), "nosuch-run", "no such run")
    assert_nothing_written(isolated)


def test_status_with_no_runs_yet(cli: Callable[..., CliResult], isolated: Path) -> None:
    assert_usage_error(cli("status"), "no runs")
    assert_nothing_written(isolated)


def test_run_with_only_overrides_and_no_config(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    assert_usage_error(cli("run", "repeats=3"), "no CONFIG")
    assert_nothing_written(isolated)


def test_run_with_no_config_at_all(cli: Callable[..., CliResult], isolated: Path) -> None:
    assert_usage_error(cli("run"), "CONFIG")
    assert_nothing_written(isolated)


def test_option_with_an_invalid_value(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config()
    assert_usage_error(cli("run", "exp.yaml", "--limit", "0"), "--limit")
    assert_nothing_written(isolated)


def test_plan_reports_bad_input_the_same_way(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config(repeat=3)
    assert_usage_error(cli("plan", "exp.yaml"), "unknown key 'repeat'")
    assert_nothing_written(isolated)


# ---------------------------------------------------------------- nothing half-written


def test_one_bad_config_among_several_writes_no_run_at_all(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config("good.yaml")
    write_config("bad.yaml", repeats="abc")
    assert_usage_error(cli("run", "good.yaml", "bad.yaml"), "bad.yaml", "key 'repeats'")
    assert_nothing_written(isolated)


def test_one_bad_multirun_combination_writes_no_run_at_all(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config()
    assert_usage_error(cli("run", "exp.yaml", "repeats=1,0", "--multirun"), "key 'repeats'")
    assert_nothing_written(isolated)


# ---------------------------------------------------------------- the error line itself


def test_brackets_in_a_file_name_are_printed_as_they_are(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    """The message is text, not console markup: `[/x]` must neither crash nor vanish."""
    assert_usage_error(cli("run", "exp[/x].yaml"), "exp[/x].yaml", "not found")
    assert_nothing_written(isolated)


def test_brackets_in_a_value_are_printed_as_they_are(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    (isolated / "exp.yaml").write_text(yaml.safe_dump(base_config(name="[red]oops")))
    assert_usage_error(cli("run", "exp.yaml"), "key 'name'", "'[red]oops'")
    assert_nothing_written(isolated)
