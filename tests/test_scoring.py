"""Deterministic scores: each scorer's verdicts and nulls, `scores:` through a run, and
`trialrun score` on a finished run (no model call, nothing written on bad input)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import CliResult, base_config, only_run, read_results
from trialrun.config import Experiment
from trialrun.scoring import Scorers, chosen_option, last_number, normalise

Cli = Callable[..., CliResult]


def score(spec: dict[str, Any], response: str = "", **record: Any) -> tuple[Any, str | None]:
    """(value, reason) of one scorer named `s` on a one-turn record answering `response`."""
    experiment = Experiment.model_validate(base_config(scores={"s": spec}))
    scorers = Scorers(experiment, "exp.yaml", "id")
    full = {
        "trial_id": "t",
        "item_id": "q0",
        "item": {"answer": "Paris", "letter": "B", "n": "1,234.5"},
        "model": "mock/alpha",
        "grid": {"temperature": 0.0},
        "repeat": 0,
        "seed": 1,
        "status": "done",
        "turns": [{"response": response, "logprobs": None}],
        **record,
    }
    scores, errors = scorers.score(full)
    return scores["s"], errors.get("s")


# ------------------------------------------------------------------ each scorer


def test_regex_matches_searches_and_takes_flags() -> None:
    assert score({"regex": "^VERDICT: yes"}, "VERDICT: yes, clearly") == (True, None)
    assert score({"regex": "^VERDICT: yes"}, "I say VERDICT: yes") == (False, None)
    assert score({"regex": "^verdict"}, "VERDICT") == (False, None)
    assert score({"regex": "^verdict", "flags": ["IGNORECASE"]}, "VERDICT") == (True, None)


def test_equals_and_includes_normalise_case_whitespace_and_end_punctuation() -> None:
    assert score({"equals": "{{ item.answer }}"}, "  paris. ") == (True, None)
    assert score({"equals": "{{ item.answer }}"}, "Paris, France") == (False, None)
    assert score({"equals": "{{ item.answer }}", "case": False}, "paris") == (False, None)
    assert score({"equals": "{{ item.answer }}", "punctuation": False}, "Paris!") == (False, None)
    assert score({"includes": "{{ item.answer }}"}, "It is  PARIS, I think") == (True, None)
    assert score({"includes": "{{ item.answer }}"}, "It is Lyon") == (False, None)
    assert normalise("  Hello,\n  World!! ") == "hello, world"
    assert normalise(" A  b ", whitespace=False) == " a  b "


def test_choice_takes_the_last_standalone_label_and_nulls_without_one() -> None:
    spec = {"choice": ["A", "B", "C", "D"], "target": "{{ item.letter }}"}
    assert score(spec, "Between A and C... Answer: B") == (True, None)
    assert score(spec, "I pick (C)") == (False, None)
    assert score(spec, "BAD CAB") == (None, "no option of A, B, C, D in the response")
    assert chosen_option("Option B_x or A.", ["A", "B"]) == "A"


def test_number_takes_the_last_number_within_tolerance_and_nulls_without_one() -> None:
    spec: dict[str, Any] = {"number": "{{ item.n }}"}
    assert score(spec, "About 12, no: 1,234.5") == (True, None)
    assert score(spec, "1234.6") == (False, None)
    assert score({**spec, "tol": 0.2}, "1234.6") == (True, None)
    assert score({**spec, "rel_tol": 0.01}, "1240") == (True, None)
    assert score(spec, "no idea") == (None, "no number in the response")
    assert last_number("-3.5 then -1,000") == -1000.0


def test_logprob_is_the_target_share_of_the_options_at_the_first_position_with_one() -> None:
    spec = {"logprob": ["A", "B"], "target": "{{ item.letter }}"}
    logprobs = [
        {"token": "The", "logprob": -0.1, "top": [{"token": "The", "logprob": -0.1}]},
        {
            "token": " A",
            "logprob": -0.5,
            "top": [
                {"token": " A", "logprob": -0.5},
                {"token": " B", "logprob": -1.5},
                {"token": "C", "logprob": -2.0},
            ],
        },
    ]
    turns = [{"response": "The A", "logprobs": logprobs}]
    value, reason = score(spec, turns=turns)
    assert reason is None and value == pytest.approx(1 / (1 + 2.718281828**1.0))
    no_logprobs = score(spec, "The A")
    assert no_logprobs == (None, "no logprobs (ask for top_logprobs)")


def test_a_failed_trial_and_a_missing_turn_give_null_with_a_reason() -> None:
    assert score({"regex": "x"}, status="failed", turns=[]) == (None, "the trial failed")
    assert score({"regex": "x", "turn": 2}, "x") == (None, "no turn 2 (the trial answered 1)")
    turns = [{"response": "x", "logprobs": None}, {"response": "y", "logprobs": None}]
    assert score({"regex": "x", "turn": 1}, turns=turns) == (True, None)


def test_a_function_scores_and_a_raise_nulls_that_record_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "myscores.py").write_text(
        "def long(item, record):\n"
        "    text = record['turns'][-1]['response']\n"
        "    if text == 'boom':\n"
        "        raise ValueError('cannot score boom')\n"
        "    return len(text) > 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert score({"function": "myscores:long"}, "long enough") == (True, None)
    reason = "the function raised ValueError: cannot score boom"
    assert score({"function": "myscores:long"}, "boom") == (None, reason)


# ------------------------------------------------------------------ through a run


def test_the_regex_contract_form_scores_a_mock_run_end_to_end(
    write_config: Callable[..., Path], cli: Cli, tmp_path: Path
) -> None:
    write_config(scores={"correct": {"regex": "^Yes"}}, followups=[])
    assert cli("run", "exp.yaml").code == 0
    records = read_results(only_run(tmp_path / "runs"))
    assert len(records) == 16
    for record in records:
        expected = record["turns"][-1]["response"].startswith("Yes")
        assert record["scores"] == {"correct": expected}
        assert record["score_errors"] == {}
    assert any(r["scores"]["correct"] for r in records)
    assert not all(r["scores"]["correct"] for r in records)


def _finished_run(write_config: Callable[..., Path], cli: Cli, tmp_path: Path) -> Path:
    items = [{"id": f"q{i}", "prompt": f"Is claim {i} true?", "answer": "Yes."} for i in range(4)]
    write_config(
        dataset={"items": items},
        scores={"correct": {"regex": "^Yes"}},
        followups=[],
    )
    assert cli("run", "exp.yaml").code == 0
    return only_run(tmp_path / "runs")


def _attempts(run_dir: Path) -> int:
    with sqlite3.connect(run_dir / "trialrun.db") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0])


def test_score_adds_and_changes_scorers_without_a_model_call(
    write_config: Callable[..., Path], cli: Cli, tmp_path: Path
) -> None:
    run_dir = _finished_run(write_config, cli, tmp_path)
    attempts = _attempts(run_dir)
    result = cli(
        "score",
        str(run_dir),
        'scores.exact={equals: "{{ item.answer }}"}',
        "scores.correct.regex=^No",
    )
    assert result.code == 0, result.err
    assert "exact" in result.out and "correct" in result.out
    assert _attempts(run_dir) == attempts
    records = read_results(run_dir)
    for record in records:
        response = record["turns"][-1]["response"]
        assert record["scores"]["correct"] is response.startswith("No")
        assert record["scores"]["exact"] is (normalise(response) == "yes")
    exported = cli("export", str(run_dir), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(exported.out)))
    assert {"scores.exact", "scores.correct"} <= set(rows[0])
    stored = json.loads(cli("export", str(run_dir)).out.splitlines()[0])
    assert stored["scores"] == records[0]["scores"]
    meta_scores = _meta(run_dir)["scores"]
    assert meta_scores["exact"] == {"equals": "{{ item.answer }}"}


def _meta(run_dir: Path) -> dict[str, Any]:
    with sqlite3.connect(run_dir / "trialrun.db") as conn:
        return {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("scores.bad.regex=(", "regex '(' does not compile"),
        ("scores.bad.foo=1", "unknown key 'scores.bad.foo'"),
        ("scores.bad.equals={{ item.nope }}", "uses item.nope"),
        ("scores.bad.function=no_such_module_x:f", "cannot import no_such_module_x"),
        ("repeats=3", "only scores.* can change"),
    ],
)
def test_score_refuses_bad_input_in_one_line_and_writes_nothing(
    write_config: Callable[..., Path], cli: Cli, tmp_path: Path, override: str, says: str
) -> None:
    run_dir = _finished_run(write_config, cli, tmp_path)
    before = (run_dir / "results.jsonl").read_bytes(), _meta(run_dir)
    result = cli("score", str(run_dir), override)
    assert result.code == 2
    assert says in result.err and len(result.err.strip().splitlines()) == 1
    assert ((run_dir / "results.jsonl").read_bytes(), _meta(run_dir)) == before


def test_a_bad_scorer_in_a_config_stops_the_run_before_anything_is_written(
    write_config: Callable[..., Path], cli: Cli, tmp_path: Path
) -> None:
    write_config(scores={"x": {"regex": "[", "flags": ["DOTALL"]}})
    result = cli("run", "exp.yaml")
    assert result.code == 2 and "scores.x" in result.err and "does not compile" in result.err
    assert not (tmp_path / "runs").exists()


def test_a_function_raising_on_one_record_nulls_that_score_and_the_run_goes_on(
    write_config: Callable[..., Path],
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "picky.py").write_text(
        "def check(item, record):\n"
        "    if item['id'] == 'q0':\n"
        "        raise KeyError('q0 is odd')\n"
        "    return True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    write_config(scores={"picky": {"function": "picky:check"}}, followups=[])
    assert cli("run", "exp.yaml").code == 0
    records = read_results(only_run(tmp_path / "runs"))
    assert len(records) == 16 and all(r["status"] == "done" for r in records)
    for record in records:
        if record["item_id"] == "q0":
            assert record["scores"] == {"picky": None}
            assert record["score_errors"] == {"picky": "the function raised KeyError: 'q0 is odd'"}
        else:
            assert record["scores"] == {"picky": True} and record["score_errors"] == {}


def test_a_scorer_function_beside_the_config_imports_from_any_folder(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`scores.x.function: myscorers:fn` finds myscorers.py beside the config, run from
    another folder, without touching the Python path for good."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "besideconfig_scorers.py").write_text("def short(item, record):\n    return True\n")
    config = base_config(scores={"s": {"function": "besideconfig_scorers:short"}}, followups=[])
    (project / "exp.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("run", str(project / "exp.yaml"), "--limit", "1")
    assert result.code == 0, result.err
    assert str(project) not in sys.path
    records = read_results(only_run(elsewhere / "runs"))
    assert all(r["scores"] == {"s": True} for r in records)


def test_status_counts_each_score(cli: Cli, write_config: Callable[..., Path]) -> None:
    write_config(scores={"yes": {"regex": "(?i)yes"}, "n": {"number": "1"}}, followups=[])
    assert cli("run", "exp.yaml").code == 0
    records = read_results(only_run(Path("runs")))
    true = sum(1 for r in records if r["scores"]["yes"] is True)
    null = sum(1 for r in records if r["scores"]["n"] is None)
    out = cli("status").out
    assert f"score yes: {true:,} true, {len(records) - true:,} false" in out
    assert "score n: " in out and f"{null:,} null" in out
