"""Custom trials (`task: package.module:function`, issue 15 part 3): the function's calls
are the record's turns through the executor's own path (cache, attempts, resume), its dict
is the record's `output` that scores and judges read, its failures fail only its trial,
and a bad path or batch mode is refused at load. The last test steers a tiny local model."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

import trialrun
from conftest import ROOT, CliResult, base_config, only_run, read_results, trialrun_subprocess

Cli = Callable[..., CliResult]
MODULE = "trtasks"
TASKS = """
import os
import time
from pathlib import Path


async def two_calls(ctx):
    first = await ctx.generate(ctx.messages)
    again = [*ctx.messages, {"role": "assistant", "content": first.text},
             {"role": "user", "content": "Say it again, " + ctx.item["id"]}]
    second = await ctx.generate(again, max_tokens=7)
    return {"first": first.text, "second": second.text, "temperature": ctx.grid["temperature"],
            "seed": ctx.seed, "repeat": ctx.repeat, "model": ctx.model,
            "max_tokens": ctx.params["max_tokens"]}


def sync_other_model(ctx):
    answer = ctx.wait(ctx.generate([{"role": "user", "content": "hi"}], model="mock/beta"))
    return {"text": answer.text, "words": len(answer.text.split())}


async def raises_on_q1(ctx):
    await ctx.generate(ctx.messages)
    if ctx.item["id"] == "q1":
        raise ValueError("boom on " + ctx.item["id"])
    return {"ok": True}


def returns_a_list(ctx):
    return [1, 2]


def killed_after_first_call(ctx):
    ctx.wait(ctx.generate(ctx.messages))
    marker = Path(os.environ["TRIALRUN_TEST_MARKER"])
    if not marker.exists():
        time.sleep(0.8)  # the first calls' attempts are flushed (every 0.25 s)
        marker.write_text("killed")
        os.kill(os.getpid(), 9)
    ctx.wait(ctx.generate([{"role": "user", "content": "second " + ctx.item["id"]}]))
    return {"done": True}


async def steers_at_the_grid_layer(ctx):
    vector = await ctx.concept_vector(["The ocean is deep."], ["Answer briefly."], 1.0)
    out = await ctx.generate_steered(ctx.messages, vector, layer=ctx.grid["layer"], strength=2.0)
    return {"layer": out["injection"]["layer"]}


async def steered(ctx):
    vector = await ctx.concept_vector(["The ocean is deep and blue."], ["Answer briefly."], 0.5)
    plain = await ctx.generate(ctx.messages)
    out = await ctx.generate_steered(ctx.messages, vector, layer=0.5, strength=ctx.grid["strength"])
    return {"plain": plain.text, "steered": out["text"], "injection": out["injection"],
            "layers": len(ctx.hf_model.model.layers), "vocab": len(ctx.tokenizer)}
"""


@pytest.fixture(autouse=True)
def tasks_module(tmp_path: Path) -> Iterator[None]:
    """The task functions in a module beside the config, imported fresh for each test."""
    (tmp_path / f"{MODULE}.py").write_text(TASKS)
    sys.modules.pop(MODULE, None)
    yield
    sys.modules.pop(MODULE, None)


def write(config: dict[str, Any]) -> str:
    Path("exp.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return "exp.yaml"


def task_config(task: str, **changes: Any) -> dict[str, Any]:
    return base_config(task=f"{MODULE}:{task}", followups=[], **changes)


def sent(run: Path) -> list[tuple[str, int, int]]:
    """(trial, turn, count) of the trial calls a provider answered (no cache hit, no judge)."""
    with closing(sqlite3.connect(run / "trialrun.db")) as conn:
        rows = conn.execute(
            "SELECT trial_id, turn, COUNT(*) FROM attempts WHERE response IS NOT NULL "
            "AND cache_hit = 0 AND turn >= 0 GROUP BY trial_id, turn"
        ).fetchall()
    return [(str(t), int(k), int(n)) for t, k, n in rows]


# ------------------------------------------------------------------ calls, turns, output


def test_a_task_s_two_calls_are_its_turns_and_its_dict_is_the_output(cli: Cli) -> None:
    judge = {
        "model": "mock/judge",
        "prompt": "{{ output.first }}|{{ turns[1].user }}|{{ turns | length }}|{{ response }}",
        "schema": {"answer": ["pass", "fail"]},
    }
    scores = {"second": {"regex": "."}}
    result = cli("run", write(task_config("two_calls", judge=judge, scores=scores)))
    assert result.code == 0, result.err
    run = only_run(Path("runs"))
    records = read_results(run)
    assert len(records) == 16 and {r["status"] for r in records} == {"done"}
    for record in records:
        first, second = record["turns"]
        output = record["output"]
        assert output["first"] == first["response"] and output["second"] == second["response"]
        assert first["model"] == second["model"] == record["model"] == output["model"]
        assert first["user"] == f"Is claim {record['item_id'][1]} true?"
        assert second["user"] == f"Say it again, {record['item_id']}"
        assert output["temperature"] == record["grid"]["temperature"]
        assert (output["seed"], output["repeat"]) == (record["seed"], record["repeat"])
        assert output["max_tokens"] == 32 == record["params"]["max_tokens"]
        assert record["judge"]["answer"] in ("pass", "fail")
        assert record["scores"]["second"] in (True, False)
    assert sorted({(k, n) for _, k, n in sent(run)}) == [(0, 1), (1, 1)]
    assert len(sent(run)) == 32
    with closing(sqlite3.connect(run / "trialrun.db")) as conn:
        asked = conn.execute("SELECT request FROM judgments").fetchall()
        second_request = conn.execute(
            "SELECT request FROM attempts WHERE turn = 1 AND cache_hit = 0 LIMIT 1"
        ).fetchone()[0]
    assert json.loads(second_request)["params"]["max_tokens"] == 7  # the call's own params
    for (request,) in asked:
        content = json.loads(request)["messages"][0]["content"]
        first, user, count, response = content.split("|")
        assert user.startswith("Say it again, q") and count == "2" and first and response


def test_a_sync_task_calls_another_model_of_the_experiment_by_label() -> None:
    run = trialrun.run(write(task_config("sync_other_model")))
    records = read_results(run.path)
    assert len(records) == 16 and {r["status"] for r in records} == {"done"}
    for record in records:
        [turn] = record["turns"]
        assert turn["model"] == "mock/beta" and turn["user"] == "hi"
        assert record["output"] == {
            "text": turn["response"],
            "words": len(turn["response"].split()),
        }


def test_a_raising_task_fails_only_its_trials_with_the_traceback() -> None:
    run = trialrun.run(write(task_config("raises_on_q1")))
    records = read_results(run.path)
    failed = [r for r in records if r["status"] == "failed"]
    assert {r["item_id"] for r in failed} == {"q1"} and len(failed) == 4
    assert all(r["output"] == {"ok": True} for r in records if r["status"] == "done")
    for record in failed:
        error = record["error"]
        assert error.startswith("task raised ValueError: boom on q1\n")
        assert "Traceback (most recent call last)" in error and "raises_on_q1" in error
        assert record["output"] is None and len(record["turns"]) == 1
    assert run.counts() == {"pending": 0, "running": 0, "done": 12, "failed": 4}


def test_a_task_that_returns_no_dict_fails_its_trial_clearly() -> None:
    run = trialrun.run(write(task_config("returns_a_list")))
    errors = {r["error"] for r in read_results(run.path)}
    assert errors == {"the task returned list, not a dict"}


# ------------------------------------------------------------------ resume


def test_a_killed_task_run_resumes_without_sending_a_call_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = task_config("killed_after_first_call", models=[{"model": "mock/alpha"}], grid={})
    marker = tmp_path / "marker"
    monkeypatch.setenv("TRIALRUN_TEST_MARKER", str(marker))
    process = trialrun_subprocess("run", write(config), "--quiet", cwd=tmp_path)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL and marker.exists()
    run = trialrun.open_run(only_run(tmp_path / "runs"))
    assert {k for _, k, _ in sent(run.path)} == {0}  # killed before any second call
    before = {t for t, _, _ in sent(run.path)}
    assert before

    trialrun.resume(run)

    assert run.counts()["done"] == 4
    calls = sent(run.path)
    assert all(n == 1 for _, _, n in calls) and len(calls) == 8  # two calls a trial, once each
    assert before <= {t for t, k, _ in calls if k == 0}
    for record in read_results(run.path):
        assert record["output"] == {"done": True} and len(record["turns"]) == 2
        assert record["turns"][0]["cache_hit"] == (record["trial_id"] in before)


# ------------------------------------------------------------------ refused at load


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (f"{MODULE}:nope", f"task: {MODULE} has no function nope"),
        ("no_such_module_here:fn", "task: cannot import no_such_module_here"),
        ("not a path", "key 'task': expected package.module:function"),
    ],
)
def test_a_bad_task_path_is_one_line_and_nothing_is_written(
    cli: Cli, tmp_path: Path, task: str, expected: str
) -> None:
    result = cli("run", write(base_config(task=task, followups=[])))
    assert result.code == 2 and expected in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_task_in_batch_mode_or_with_followups_is_refused(cli: Cli, tmp_path: Path) -> None:
    result = cli("run", write(task_config("two_calls", mode="batch")))
    assert result.code == 2 and "batch mode cannot; use mode: realtime" in result.err
    result = cli("run", write(base_config(task=f"{MODULE}:two_calls")))
    assert result.code == 2 and "task: a custom trial makes its own turns" in result.err
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ a local model, steered


def test_a_task_steers_a_tiny_local_model_and_records_the_injection(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the local extra: pip install torch==2.13.0")
    pytest.importorskip("transformers", reason="the local extra: pip install 'trialrun[local]'")
    from trialrun.local.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny")
    config = task_config(
        "steered",
        models=[{"model": f"hf/{folder}"}],
        grid={"strength": [0.0, 8.0]},
        params={"max_tokens": 8},
        dataset={"items": [{"id": "q0", "prompt": "Do you notice anything unusual?"}]},
    )
    run = trialrun.run(write(config))
    records = {r["grid"]["strength"]: r for r in read_results(run.path)}
    assert {r["status"] for r in records.values()} == {"done"}, records
    off, on = records[0.0]["output"], records[8.0]["output"]
    assert off["layers"] == 2 and off["vocab"] > 0
    assert off["steered"] == off["plain"]  # strength 0 adds nothing
    assert on["steered"] != on["plain"]  # strength 8 changes the greedy answer
    injection = on["injection"]
    assert len(injection["vector_sha256"]) == 64
    assert injection["vector_sha256"] == off["injection"]["vector_sha256"]
    assert (injection["layer"], injection["strength"], injection["positions"]) == (0, 8.0, "all")
    ratio = injection["injected_norm"] / injection["mean_activation_norm"]
    assert injection["relative_norm"] == pytest.approx(ratio) and ratio > 0
    assert [len(r["turns"]) for r in records.values()] == [1, 1]  # steered runs are not turns


def test_steering_a_layer_the_model_lacks_fails_those_trials_in_one_clear_line(
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch", reason="the local extra: pip install torch==2.13.0")
    pytest.importorskip("transformers", reason="the local extra: pip install 'trialrun[local]'")
    from trialrun.local.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny")  # 2 decoder layers
    config = task_config(
        "steers_at_the_grid_layer",
        models=[{"model": f"hf/{folder}"}],
        grid={"layer": [1, 2, 0.0, 1.5]},
        params={"max_tokens": 2},
        dataset={"items": [{"id": "q0", "prompt": "Anything unusual?"}]},
    )
    records = {r["grid"]["layer"]: r for r in read_results(trialrun.run(write(config)).path)}
    assert records[1]["status"] == "done" and records[1]["output"] == {"layer": 1}
    expected = {
        2: "steering: layer 2 is beyond the model's 2 layers (indices -2..1, or a fraction",
        0.0: "steering: layer fraction 0.0 is outside (0, 1] (an int is an index)",
        1.5: "steering: layer fraction 1.5 is outside (0, 1]",
    }
    for layer, message in expected.items():
        record = records[layer]
        assert record["status"] == "failed" and record["output"] is None
        first = record["error"].splitlines()[0]
        assert first.startswith(f"task raised ConfigError: {message}"), first


def test_steering_a_model_that_is_not_local_fails_its_trials_clearly() -> None:
    config = task_config("steers_at_the_grid_layer", models=[{"model": "mock/alpha"}])
    records = read_results(trialrun.run(write(config)).path)
    assert len(records) == 8 and {r["status"] for r in records} == {"failed"}
    for record in records:
        assert record["error"].splitlines()[0] == (
            "task raised TrialrunError: mock/alpha: not a local hf/ model; hf_model, "
            "tokenizer, exclusive and steering need one"
        )


def test_the_introspection_example_runs_offline_and_is_judged(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the local extra: pip install torch==2.13.0")
    pytest.importorskip("transformers", reason="the local extra: pip install 'trialrun[local]'")
    from trialrun.local.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny", layers=6)
    overrides = [f"models.0.model=hf/{folder}", "grid.layer=[0.5]", "grid.strength=[4.0]"]
    overrides.append("params.max_tokens=8")
    config = ROOT / "examples" / "introspection.yaml"
    run = trialrun.run(str(config), overrides, limit=4)
    records = read_results(run.path)
    assert len(records) == 4 and {r["status"] for r in records} == {"done"}
    for record in records:
        output, injection = record["output"], record["output"]["injection"]
        assert output["injected"] == record["grid"]["injected"]
        assert injection["layer"] == 2  # 0.5 of 6 layers
        assert injection["strength"] == (4.0 if output["injected"] else 0.0)
        assert set(record["judge"]) == {"answer", "coherent", "detected_concept", "reasoning"}
