"""A mock that can be graded: `mock.answer`/`accuracy` (and per mock model `options`) make
the offline mock answer right at a known rate, so a scoring pipeline can be dry-run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import CliResult, only_run, read_results
from trialrun.providers.mock import Grading, answer, wrong_answer
from trialrun.types import Request

Cli = Callable[..., CliResult]
ITEMS = 2000


def _graded_config(write_config: Callable[..., Path], **changes: Any) -> None:
    items = [
        {"id": f"q{i}", "prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(ITEMS)
    ]
    config: dict[str, Any] = {
        "dataset": {"items": items},
        "models": [
            {"model": "mock/alpha", "options": {"accuracy": 0.9}},
            {"model": "mock/beta"},
        ],
        "grid": {},
        "followups": [],
        "mock": {"answer": "{{ item.answer }}", "accuracy": 0.6},
        "scores": {"correct": {"equals": "{{ item.answer }}"}},
        "cache": {"enabled": False},
    }
    write_config(**{**config, **changes})


def _run(cli: Cli, tmp_path: Path) -> list[dict[str, Any]]:
    result = cli("run", "exp.yaml")
    assert result.code == 0, result.err
    newest = sorted(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    return read_results(max(newest, key=lambda p: p.stat().st_mtime_ns))


def test_two_mock_models_answer_right_at_their_own_rates_the_same_on_every_run(
    write_config: Callable[..., Path], cli: Cli, tmp_path: Path
) -> None:
    _graded_config(write_config)
    first = _run(cli, tmp_path)
    for model, accuracy in (("mock/alpha", 0.9), ("mock/beta", 0.6)):
        records = [r for r in first if r["model"] == model]
        assert len(records) == ITEMS
        right = [r["turns"][-1]["response"] == r["item"]["answer"] for r in records]
        assert abs(sum(right) / ITEMS - accuracy) <= 0.03
        scored = [r["scores"]["correct"] for r in records]
        assert scored == right  # the `equals` scorer sees the rate the mock was given
        wrong = [r for r, ok in zip(records, right, strict=True) if not ok]
        assert all(int(r["turns"][-1]["response"]) == int(r["item"]["answer"]) + 1 for r in wrong)
    second = _run(cli, tmp_path)
    assert [r["turns"][-1]["response"] for r in second] == [
        r["turns"][-1]["response"] for r in first
    ]


def test_a_wrong_answer_is_another_choice_a_number_plus_one_or_i_do_not_know() -> None:
    assert wrong_answer("B", ["A", "B", "C", "D"], 0.5) in {"A", "C", "D"}
    assert wrong_answer("1,234", None, 0.5) == "1235"
    assert wrong_answer("2.5", None, 0.5) == "3.5"
    assert wrong_answer("Paris", None, 0.5) == "I do not know."
    request = Request("m", [{"role": "user", "content": "Q?"}], {"seed": 1}, None, {})
    assert answer(request, Grading(0.0)).text != "I do not know."  # ungraded: prose


def test_a_choice_scorer_on_a_graded_mock_gives_the_configured_rate(
    write_config: Callable[..., Path], cli: Cli, tmp_path: Path
) -> None:
    letters = "ABCD"
    items = [
        {"id": f"q{i}", "prompt": f"Pick for {i}", "letter": letters[i % 4]} for i in range(400)
    ]
    write_config(
        dataset={"items": items},
        models=[{"model": "mock/alpha"}],
        grid={},
        followups=[],
        mock={"answer": "{{ item.letter }}", "accuracy": 0.5, "choices": list(letters)},
        scores={"pick": {"choice": list(letters), "target": "{{ item.letter }}"}},
    )
    records = _run(cli, tmp_path)
    values = [r["scores"]["pick"] for r in records]
    assert None not in values
    assert abs(sum(values) / len(values) - 0.5) <= 0.06


def test_batch_mode_grades_too_and_one_prompt_with_two_answers_is_two_requests(
    write_config: Callable[..., Path], cli: Cli, tmp_path: Path
) -> None:
    items = [{"id": "a", "prompt": "Q", "answer": "11"}, {"id": "b", "prompt": "Q", "answer": "22"}]
    write_config(
        mode="batch",
        dataset={"items": items},
        models=[{"model": "mock/alpha", "options": {"accuracy": 1.0}}],
        grid={},
        followups=[],
        mock={"answer": "{{ item.answer }}", "accuracy": 0.0},
        scores={"correct": {"equals": "{{ item.answer }}"}},
    )
    assert cli("run", "exp.yaml", "--wait").code == 0
    records = read_results(only_run(tmp_path / "runs"))
    assert [r["turns"][-1]["response"] for r in records] == ["11", "22"]
    assert [r["scores"] for r in records] == [{"correct": True}] * 2


def test_a_graded_mocks_bad_answer_template_or_options_stop_at_load(
    write_config: Callable[..., Path], cli: Cli, tmp_path: Path
) -> None:
    cases = [
        ({"mock": {"answer": "{{ item.answer }}"}}, "mock.answer: uses item.answer"),
        (
            {"models": [{"model": "mock/a", "options": {"answer": "x", "accuracy": 1.5}}]},
            "models[0].options.accuracy: expected a number from 0 to 1",
        ),
        (
            {"models": [{"model": "mock/a", "options": {"answer": "x", "choices": "ABCD"}}]},
            "models[0].options.choices: expected a list of two or more texts",
        ),
    ]
    for changes, expected in cases:
        result = cli("run", str(write_config(**changes)))
        assert result.code == 2, result.err
        assert expected in result.err and len(result.err.strip().splitlines()) == 1
        assert not (tmp_path / "runs").exists()
