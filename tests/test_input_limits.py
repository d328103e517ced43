"""Input past Python's own limits (4,300-digit integers, nesting that would exhaust the
recursion limit, names too long for a folder), duplicate YAML keys and an `output.dir` that
cannot hold run folders: each is one `trialrun: error:` line, exit 2, nothing written."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import CliResult, base_config, only_run
from test_bad_input import assert_nothing_written, assert_usage_error, write_text
from trialrun.config import MAX_NAME_LENGTH
from trialrun.config_yaml import MAX_DEPTH

TOO_MANY_DIGITS = "9" * (sys.get_int_max_str_digits() + 100)


def config_text(**changes: object) -> str:
    return yaml.safe_dump(base_config(**changes), sort_keys=False)


def jsonl_rows(*extra: str) -> str:
    """Two good rows, then a row whose `extra` field is the given raw JSON text."""
    rows = [json.dumps({"id": f"q{i}", "prompt": "x", "category": "c"}) for i in range(2)]
    for i, value in enumerate(extra, start=2):
        rows.append(f'{{"id": "q{i}", "prompt": "x", "category": "c", "extra": {value}}}')
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------- long integers


def test_integer_too_long_for_python_in_the_config_names_the_line(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    text = config_text() + f"retry:\n  attempts: {TOO_MANY_DIGITS}\n"
    write_text(isolated, "exp.yaml", text)
    line = text.count("\n")
    err = assert_usage_error(cli("plan", "exp.yaml"), "exp.yaml", f"line {line},", "integer")
    assert "quote it" in err
    assert_nothing_written(isolated)


def test_integer_too_long_for_python_in_an_override_names_the_override(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config()
    err = assert_usage_error(cli("run", "exp.yaml", f"seed={TOO_MANY_DIGITS}"), "override 'seed=")
    assert "integer" in err
    assert len(err) < 400, "the 4,400-digit value is not echoed whole"
    assert_nothing_written(isolated)


def test_integer_too_long_for_python_in_a_dataset_row_names_the_line(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_text(isolated, "items.jsonl", jsonl_rows(TOO_MANY_DIGITS))
    write_config(dataset={"path": "items.jsonl"})
    assert_usage_error(cli("run", "exp.yaml"), "items.jsonl:3", "integer")
    assert_nothing_written(isolated)


# ---------------------------------------------------------------- deep nesting


@pytest.mark.parametrize("depth", [MAX_DEPTH, 5_000])
def test_deeply_nested_config_names_the_line(
    cli: Callable[..., CliResult], isolated: Path, depth: int
) -> None:
    text = config_text() + "mock: " + "[" * depth + "]" * depth + "\n"
    write_text(isolated, "exp.yaml", text)
    line = text.count("\n")
    err = assert_usage_error(cli("plan", "exp.yaml"), "exp.yaml", f"line {line},")
    assert f"more than {MAX_DEPTH} levels" in err
    assert_nothing_written(isolated)


def test_deeply_nested_override_names_the_override(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config()
    value = "[" * 5_000 + "]" * 5_000
    err = assert_usage_error(cli("run", "exp.yaml", f"params.x={value}"), "override 'params.x=")
    assert f"more than {MAX_DEPTH} levels" in err
    assert_nothing_written(isolated)


def test_nesting_built_from_aliases_is_refused(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    """Each line nests 60 levels, under the cap; the alias puts one inside the other."""
    deep = "[" * 60 + "]" * 60
    inner = "[" * 60 + "*a" + "]" * 60
    text = config_text() + f"anchors: &a {deep}\nmock: {inner}\n"
    write_text(isolated, "exp.yaml", text)
    assert_usage_error(cli("plan", "exp.yaml"), "exp.yaml", "aliases", f"{MAX_DEPTH} levels")
    assert_nothing_written(isolated)


@pytest.mark.parametrize("depth", [MAX_DEPTH, 990, 100_000])
def test_deeply_nested_jsonl_row_names_the_file_and_line(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path, depth: int
) -> None:
    write_text(isolated, "items.jsonl", jsonl_rows("[" * depth + "]" * depth))
    write_config(dataset={"path": "items.jsonl"})
    err = assert_usage_error(cli("run", "exp.yaml"), "items.jsonl:3")
    assert f"more than {MAX_DEPTH} levels" in err
    assert_nothing_written(isolated)


@pytest.mark.parametrize("depth", [500, 100_000])
def test_deeply_nested_json_row_names_the_file(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path, depth: int
) -> None:
    rows = jsonl_rows("[" * depth + "]" * depth).strip().replace("\n", ",\n")
    write_text(isolated, "items.json", f"[{rows}]\n")
    write_config(dataset={"path": "items.json"})
    err = assert_usage_error(cli("run", "exp.yaml"), "items.json")
    assert re.search(r"items\.json(: item 2|:3):", err), err
    assert f"more than {MAX_DEPTH} levels" in err
    assert_nothing_written(isolated)


def test_row_nested_just_under_the_cap_is_run(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    depth = MAX_DEPTH - 3  # the row is level 1, `extra` level 2, the innermost list holds a 1
    write_text(isolated, "items.jsonl", jsonl_rows("[" * depth + "1" + "]" * depth))
    write_config(dataset={"path": "items.jsonl"})
    result = cli("run", "exp.yaml", "-q")
    assert result.code == 0, result.err


# ---------------------------------------------------------------- names and folders


def test_experiment_name_too_long_for_a_folder_says_the_limit(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    write_text(isolated, "exp.yaml", config_text(name="a" * 235))
    err = assert_usage_error(cli("run", "exp.yaml"), "exp.yaml", "key 'name'")
    assert f"at most {MAX_NAME_LENGTH} characters" in err
    assert_nothing_written(isolated)


def test_experiment_name_at_the_limit_makes_a_run_folder(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    write_text(isolated, "exp.yaml", config_text(name="a" * MAX_NAME_LENGTH))
    result = cli("run", "exp.yaml", "-q")
    assert result.code == 0, result.err
    assert only_run(isolated / "runs").name.startswith("a" * MAX_NAME_LENGTH + "-")


def test_output_dir_that_is_a_file(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_text(isolated, "taken", "a file\n")
    write_config(output={"dir": "taken"})
    assert_usage_error(cli("run", "exp.yaml"), "exp.yaml", "output.dir 'taken'", "is a file")
    assert (isolated / "taken").read_text() == "a file\n"
    assert_nothing_written(isolated)


def test_output_dir_that_cannot_be_created(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_text(isolated, "taken", "a file\n")
    write_config()
    result = cli("run", "exp.yaml", "output.dir=taken/runs")
    assert_usage_error(result, "output.dir 'taken/runs'", "cannot be created")
    assert_nothing_written(isolated)


# ---------------------------------------------------------------- duplicate keys


def test_duplicate_top_level_key_names_the_key_and_both_lines(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    text = config_text(repeats=2) + "repeats: 3\n"
    write_text(isolated, "exp.yaml", text)
    first = text.splitlines().index("repeats: 2") + 1
    last = text.count("\n")
    err = assert_usage_error(cli("plan", "exp.yaml"), "exp.yaml", "key 'repeats'", f"line {last},")
    assert f"first at line {first}" in err
    assert_nothing_written(isolated)


def test_duplicate_nested_key_is_refused(cli: Callable[..., CliResult], isolated: Path) -> None:
    text = config_text() + "retry:\n  attempts: 2\n  timeout_s: 5\n  attempts: 3\n"
    write_text(isolated, "exp.yaml", text)
    assert_usage_error(cli("plan", "exp.yaml"), "exp.yaml", "key 'attempts'", "given twice")
    assert_nothing_written(isolated)


def test_duplicate_key_in_an_override_value_names_the_override(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    write_config()
    result = cli("run", "exp.yaml", "params={max_tokens: 8, max_tokens: 16}")
    assert_usage_error(result, "override 'params=", "key 'max_tokens'", "given twice")
    assert_nothing_written(isolated)


def test_merge_keys_may_still_override_what_they_merge(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    """Not a duplicate: a key after `<<:` is how YAML overrides a merged one."""
    text = config_text() + "retry:\n  <<: {attempts: 2, timeout_s: 5}\n  attempts: 3\n"
    write_text(isolated, "exp.yaml", text)
    result = cli("plan", "exp.yaml")
    assert result.code == 0, result.err
