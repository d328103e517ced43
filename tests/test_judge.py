"""LLM judges in real time (issue 12): online and after, several judges, every kind of bad
reply, structured output over real HTTP to each fake provider, `trialrun judge` (missing,
--failed-only, a new judge beside the old), and the bad inputs that stop a run before it
starts. Batch mode's judge stage is tested in test_batch_judge.py, kill -9 and fault mixes
in reliability/test_judge_reliability.py."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import CliResult, base_config, only_run, read_results
from trialrun.testing import FakeServer
from trialrun.testing.faults import Faults

Cli = Callable[..., CliResult]
KEY = "sk-judge-test-0123456789"
SCHEMA = {"answer": ["pass", "fail"], "coherent": "bool", "reasoning": "str"}
PROMPT = "Question: {{ item.prompt }}\nAnswer: {{ response }}\nGrade the answer."


def judge(**changes: Any) -> dict[str, Any]:
    return {"model": "mock/judge", "prompt": PROMPT, "schema": SCHEMA, **changes}


def write(config: dict[str, Any], name: str = "exp.yaml") -> str:
    Path(name).write_text(yaml.safe_dump(config, sort_keys=False))
    return name


def judgments(run: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(run / "trialrun.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM judgments")]
    finally:
        conn.close()


def judge_calls(run: Path) -> int:
    """Calls a judge paid for: attempts under turn -1 answered by the provider."""
    conn = sqlite3.connect(run / "trialrun.db")
    try:
        row = conn.execute(
            "SELECT COUNT(*) FROM attempts WHERE turn = -1 AND response IS NOT NULL "
            "AND cache_hit = 0"
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


def check_one_outcome_per_judge(run: Path, names: list[str]) -> list[dict[str, Any]]:
    """Every done record has, for each judge, exactly one of a verdict and an error, equal
    to the judgments table's one row; failed trials have none."""
    records = read_results(run)
    rows = {(j["trial_id"], j["judge"]): j for j in judgments(run)}
    for record in records:
        if record["status"] != "done":
            assert not any(key[0] == record["trial_id"] for key in rows)
            continue
        for name in names:
            row = rows[(record["trial_id"], name)]
            verdict, error = record["judges"][name], record["judge_errors"][name]
            assert (verdict is None) != (error is None), (name, record)
            if row["state"] == "done":
                assert verdict == json.loads(row["verdict"]) and error is None
            else:
                assert verdict is None and error == row["error"]
        assert record["judge"] == record["judges"][names[0]]
        assert record["judge_error"] == record["judge_errors"][names[0]]
    done = sum(1 for r in records if r["status"] == "done")
    assert len(rows) == done * len(names)
    return records


# ------------------------------------------------------------------ online and after


def test_online_judge_fills_every_done_record_with_a_schema_valid_verdict(cli: Cli) -> None:
    result = cli("run", write(base_config(judge=judge())))
    assert result.code == 0, result.err
    run = only_run(Path("runs"))
    records = check_one_outcome_per_judge(run, ["judge"])
    assert len(records) == 16
    for record in records:
        verdict = record["judge"]
        assert set(verdict) == {"answer", "coherent", "reasoning"}
        assert verdict["answer"] in ("pass", "fail") and isinstance(verdict["coherent"], bool)
    assert "judge (mock/judge): 16 verdicts, 0 judge errors" in result.out
    rows = judgments(run)
    assert {r["asks"] for r in rows} == {1} and {r["state"] for r in rows} == {"done"}
    request = json.loads(rows[0]["request"])
    assert request["schema"]["required"] == ["answer", "coherent", "reasoning"]
    assert "Grade the answer." in request["messages"][0]["content"]
    assert request["params"]["temperature"] == 0.0


def test_a_judge_sees_item_grid_turns_and_response_but_not_the_model_unless_asked(
    cli: Cli,
) -> None:
    prompt = (
        "{{ item.id }}|{{ temperature }}|{{ turns | length }}|{{ turns[0].user }}|"
        "{{ turns[1].response == response }}|{{ scores.yes }}"
    )
    config = base_config(judge=judge(prompt=prompt), scores={"yes": {"regex": "(?i)yes"}})
    assert cli("run", write(config), "--limit", "1").code == 0
    run = only_run(Path("runs"))
    for row in judgments(run):
        content = json.loads(row["request"])["messages"][0]["content"]
        item, temperature, turns, first_user, same, score = content.split("|")
        assert item.startswith("q") and temperature in ("0.0", "0.7") and turns == "2"
        assert first_user.startswith("Is claim") and same == "True"
        assert score in ("True", "False")
        assert "mock/alpha" not in content and "mock/beta" not in content


def test_several_judges_one_after_the_end(cli: Cli) -> None:
    judges = [judge(name="strict"), judge(name="later", model="mock/judge2", when="after")]
    assert cli("run", write(base_config(judge=judges))).code == 0
    run = only_run(Path("runs"))
    records = check_one_outcome_per_judge(run, ["strict", "later"])
    assert all(set(r["judges"]) == {"strict", "later"} for r in records)
    # results.jsonl shows the after-judge's verdicts, as the store does
    with sqlite3.connect(run / "trialrun.db") as conn:
        stored = [json.loads(r) for (r,) in conn.execute("SELECT record FROM records ORDER BY seq")]
    assert stored == records


def test_failed_trials_are_not_judged(cli: Cli) -> None:
    items = [{"id": "ok", "prompt": "fine", "d": 1}, {"id": "bad", "prompt": "x", "d": 0}]
    config = base_config(
        dataset={"items": items}, judge=judge(), models=[{"model": "mock/alpha"}], grid={}
    )
    config.update(followups=["{{ 1 // item.d }}"])  # fails the second item's trial
    result = cli("run", write(config))
    assert result.code == 3, result.err
    run = only_run(Path("runs"))
    records = check_one_outcome_per_judge(run, ["judge"])
    assert [r["status"] for r in records] == ["done", "failed"]
    assert records[1]["judges"] == {"judge": None}


# ------------------------------------------------------------------ bad replies


@pytest.mark.parametrize(
    ("marker", "kind", "asks"),
    [
        ("invalid", "schema", 3),
        ("garbage", "parse", 3),
        ("refuse", "refusal", 1),
        ("truncate", "truncated", 1),
    ],
)
def test_a_bad_verdict_is_asked_again_then_left_as_a_judge_error(
    cli: Cli, marker: str, kind: str, asks: int
) -> None:
    items = [{"id": "a", "prompt": f"x [[mock:verdict-{marker}]]"}]
    config = base_config(dataset={"items": items}, judge=judge(), models=[{"model": "mock/a"}])
    config.update(grid={}, followups=[])
    assert cli("run", write(config)).code == 0
    run = only_run(Path("runs"))
    [row] = judgments(run)
    assert row["state"] == "failed" and row["error_kind"] == kind and row["asks"] == asks
    [record] = check_one_outcome_per_judge(run, ["judge"])
    assert record["judge"] is None and record["judge_error"] == row["error"]
    if asks > 1:
        assert f"no valid verdict after {asks} asks" in row["error"]
        last = json.loads(row["request"])["messages"]
        assert last[-1]["content"].startswith("That reply is not a valid verdict")


def test_an_invalid_verdict_once_then_a_valid_one(cli: Cli) -> None:
    items = [{"id": "a", "prompt": "x [[mock:verdict-invalid-once]]"}]
    config = base_config(dataset={"items": items}, judge=judge(), models=[{"model": "mock/a"}])
    config.update(grid={}, followups=[])
    assert cli("run", write(config)).code == 0
    [row] = judgments(only_run(Path("runs")))
    assert row["state"] == "done" and row["asks"] == 2 and row["attempts"] == 2


def test_reasks_zero_means_one_ask(cli: Cli) -> None:
    items = [{"id": "a", "prompt": "x [[mock:verdict-invalid-once]]"}]
    config = base_config(
        dataset={"items": items}, judge=judge(reasks=0), models=[{"model": "mock/a"}]
    )
    config.update(grid={}, followups=[])
    assert cli("run", write(config)).code == 0
    [row] = judgments(only_run(Path("runs")))
    assert row["state"] == "failed" and row["asks"] == 1


def test_prompt_asked_verdicts_are_extracted_or_left_as_errors(cli: Cli) -> None:
    """`structured: prompt` sends no schema and spells the fields out in the prompt; the
    mock then answers in prose, which is never turned into a verdict."""
    config = base_config(judge=judge(structured="prompt"), models=[{"model": "mock/a"}])
    config.update(grid={}, followups=[])
    assert cli("run", write(config), "--limit", "1").code == 0
    [row] = judgments(only_run(Path("runs")))
    request = json.loads(row["request"])
    assert request["schema"] is None
    assert "- answer: one of \"pass\", \"fail\"" in request["messages"][0]["content"]
    assert row["state"] == "failed" and row["error_kind"] == "parse" and row["asks"] == 3


# ------------------------------------------------------------------ over real HTTP


@pytest.fixture
def env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("openai", "openai/fake-model"),
        ("anthropic", "anthropic/fake-model"),
        ("google", "google/fake-model"),
    ],
)
def test_a_judge_on_each_provider_over_http_sends_its_schema_and_reads_the_verdict(
    cli: Cli, env_key: None, kind: str, model: str
) -> None:
    with FakeServer(kind, api_key=KEY) as server:  # type: ignore[arg-type]
        entry = {"model": model, "base_url": server.url, "api_key": "${env:FAKE_API_KEY}"}
        config = base_config(judge=judge(**entry), prices={model: {"input": 1, "output": 2}})
        config.update(grid={}, followups=[])
        result = cli("run", write(config))
        assert result.code == 0, result.err
        bodies = [r["body"] for r in server.requests]
    run = only_run(Path("runs"))
    records = check_one_outcome_per_judge(run, ["judge"])
    assert all(r["judge"] is not None for r in records)
    assert len(bodies) == len(records)
    if kind == "openai":
        assert bodies[0]["response_format"]["json_schema"]["strict"] is True
    elif kind == "anthropic":
        assert bodies[0]["tool_choice"]["type"] == "tool"
    else:
        config_key = "generationConfig" if "generationConfig" in bodies[0] else "generation_config"
        assert "responseSchema" in json.dumps(bodies[0][config_key]) or "response_schema" in (
            json.dumps(bodies[0][config_key])
        )
    rows = judgments(run)
    assert all(r["cost_usd"] is not None and r["cost_usd"] > 0 for r in rows)
    # the trials' own spend does not include the judge's calls
    status = cli("status", str(run))
    assert f"calls {len(records):,} " in status.out


# ------------------------------------------------------------------ trialrun judge


def test_judge_failed_only_redoes_exactly_the_failures(cli: Cli, env_key: None) -> None:
    with FakeServer("openai", api_key=KEY) as server:
        entry = {"model": "openai/fake-model", "base_url": server.url}
        config = base_config(judge=judge(**entry, api_key="${env:FAKE_API_KEY}"))
        config.update(grid={}, followups=[], retry={"attempts": 1})
        server.set_faults(Faults(server_error=0.5, seed=3))
        assert cli("run", write(config)).code == 0
        run = only_run(Path("runs"))
        before = {(r["trial_id"], r["state"]) for r in judgments(run)}
        failed = {t for t, state in before if state == "failed"}
        assert 0 < len(failed) < len(before)
        server.set_faults(Faults())
        server.reset()
        result = cli("judge", str(run), "--failed-only")
        assert result.code == 0, result.err
        assert f"judging {len(failed)} trials with judge" in result.out
        assert len(server.requests) == len(failed)
    after = {r["trial_id"]: r["state"] for r in judgments(run)}
    assert set(after.values()) == {"done"} and set(after) == {t for t, _ in before}
    check_one_outcome_per_judge(run, ["judge"])
    again = cli("judge", str(run), "--failed-only")
    assert "judging 0 trials" in again.out


def test_judge_adds_a_judge_to_a_run_without_one_and_resumes(cli: Cli) -> None:
    assert cli("run", write(base_config())).code == 0
    run = only_run(Path("runs"))
    assert cli("judge", str(run)).code == 2
    spec = "judge={model: mock/j, prompt: 'Grade {{ response }}', schema: {ok: bool}}"
    result = cli("judge", str(run), spec)
    assert result.code == 0, result.err
    records = check_one_outcome_per_judge(run, ["judge"])
    assert all(isinstance(r["judge"]["ok"], bool) for r in records)
    calls = judge_calls(run)
    again = cli("judge", str(run))
    assert "judging 0 trials" in again.out and judge_calls(run) == calls


def test_a_changed_judge_is_added_beside_the_old_verdicts(cli: Cli) -> None:
    assert cli("run", write(base_config(judge=judge()))).code == 0
    run = only_run(Path("runs"))
    old = {r["trial_id"]: r["judge"] for r in read_results(run)}
    result = cli("judge", str(run), "judge.model=mock/other")
    assert result.code == 0, result.err
    assert "the new judge is 'judge-2'" in result.out
    records = check_one_outcome_per_judge(run, ["judge", "judge-2"])
    assert {r["trial_id"]: r["judge"] for r in records} == old
    assert cli("judge", str(run), "--judge", "nope").code == 2
    assert cli("judge", str(run), "models.0.model=mock/x").code == 2


# ------------------------------------------------------------------ bad input


@pytest.fixture
def prompt_file() -> Iterator[Path]:
    path = Path("judges/grade.md")
    path.parent.mkdir()
    path.write_text("Grade: {{ response }} for {{ item.prompt }}", encoding="utf-8")
    yield path


def test_a_prompt_file_next_to_the_config_is_read_and_kept(cli: Cli, prompt_file: Path) -> None:
    assert cli("run", write(base_config(judge=judge(prompt="judges/grade.md")))).code == 0
    run = only_run(Path("runs"))
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["judge"]["prompt"].startswith("Grade: {{ response }}")
    content = json.loads(judgments(run)[0]["request"])["messages"][0]["content"]
    assert content.startswith("Grade: ")


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        ({"schema": {"answer": "number"}}, ["judge.schema.answer"]),
        ({"schema": {"answer": ["pass"]}}, ["judge.schema.answer", "two"]),
        ({"prompt": "judges/missing.md"}, ["judge.prompt", "no prompt file"]),
        ({"prompt": "{{ item.nope }}"}, ["judge.prompt", "item.nope"]),
        ({"prompt": "{{ verdict }}"}, ["judge.prompt", "unknown name 'verdict'"]),
        ({"when": "later"}, ["judge.when"]),
        ({"model": "nosuch/x"}, ["judge.model"]),
    ],
)
def test_bad_judge_config_is_one_line_exit_2_nothing_written(
    cli: Cli, change: dict[str, Any], fragments: list[str]
) -> None:
    result = cli("run", write(base_config(judge=judge(**change))))
    assert result.code == 2, result.err
    err = result.err.strip()
    assert "\n" not in err and err.startswith("trialrun: error: exp.yaml")
    for fragment in fragments:
        assert fragment in err, err
    assert not Path("runs").exists() or not list(Path("runs").iterdir())


def test_two_judges_with_one_name_are_refused(cli: Cli) -> None:
    result = cli("run", write(base_config(judge=[judge(), judge(model="mock/b")])))
    assert result.code == 0, result.err  # unnamed: judge and judge-2
    result = cli("run", write(base_config(judge=[judge(name="a"), judge(name="a")])))
    assert result.code == 2 and "a second judge named 'a'" in result.err


def test_plan_counts_a_judge_apart_with_its_cost(cli: Cli) -> None:
    config = base_config(
        judge=judge(model="openai/gpt-4o-mini"),
        prices={"openai/gpt-4o-mini": {"input": 1.0, "output": 2.0}},
    )
    result = cli("plan", write(config))
    assert result.code == 0, result.err
    row = next(line for line in result.out.splitlines() if "(judge: openai/gpt-4o-mini)" in line)
    cells = row.split()
    assert "16" in cells  # one ask per trial: 4 items x 2 models x 2 cells
    assert "16,384" in cells  # its own max_tokens (1024) per ask
    assert "a judge asks once per trial" in result.out
