"""`gates:` (issue 16, part 5): a gate stops a run whose rate is clearly past its threshold,
not one that is merely noisy at small n; it says which gate fired with what numbers; the
run resumes past it with --ignore-gate; bad gates are one line, exit 2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import CliResult, base_config, only_run, read_results
from trialrun.config import Experiment
from trialrun.gates import Gates

Cli = Callable[..., CliResult]


def config(accuracy: float, gate: dict[str, Any], n: int = 120) -> str:
    items = [{"id": f"q{i:03d}", "prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(n)]
    data = base_config(
        dataset={"items": items},
        models=[{"model": "mock/m", "options": {"accuracy": accuracy}}],
        grid={},
        followups=[],
        mock={"answer": "{{ item.answer }}", "latency_s": 0.02},
        scores={"exact": {"equals": "{{ item.answer }}"}},
        gates=[gate],
        limits={"mock": {"concurrency": 4}},
    )
    Path("exp.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return "exp.yaml"


FLOOR = {"name": "floor", "metric": "exact", "min_n": 20, "stop_if": "ci_high < 0.3"}


def test_a_gate_stops_a_run_clearly_below_its_floor_and_resumes_past_it(cli: Cli) -> None:
    result = cli("run", config(0.02, FLOOR))
    assert result.code == 1, result.err
    assert "gate 'floor' fired (ci_high < 0.3) on mock/m" in result.err
    assert "--ignore-gate floor" in result.err
    run = only_run(Path("runs"))
    records = read_results(run)
    assert 20 <= len(records) < 120
    status = cli("status", str(run)).out
    assert "stopped by a gate" in status
    again = cli("resume", str(run))  # the gate still holds: nothing more runs
    assert again.code == 1 and len(read_results(run)) == len(records)
    assert cli("resume", str(run), "--ignore-gate", "nope").code == 2
    past = cli("resume", str(run), "--ignore-gate", "floor")
    assert past.code == 0, past.err
    assert len(read_results(run)) == 120


def test_a_noisy_rate_near_the_floor_does_not_stop_the_run(cli: Cli) -> None:
    result = cli("run", config(0.3, FLOOR))
    assert result.code == 0, result.err
    records = read_results(only_run(Path("runs")))
    assert len(records) == 120
    early = [r["scores"]["exact"] for r in records[:20]]
    assert sum(early) / 20 < 0.45  # a raw-rate rule on the first 20 could have fired


def test_a_failed_rate_gate(cli: Cli) -> None:
    gate = {"metric": "failed_rate", "min_n": 10, "stop_if": "ci_low > 0.5", "action": "pause"}
    path = config(0.9, gate)
    data = yaml.safe_load(Path(path).read_text())
    data["followups"] = ["{{ 1 // 0 }}"]  # every trial fails at its second turn
    Path(path).write_text(yaml.safe_dump(data))
    result = cli("run", path)
    assert result.code == 1 and "gate 'gate-1' fired" in result.err
    assert "paused by a gate" in cli("status").out


@pytest.mark.parametrize(
    ("gate", "fragment"),
    [
        ({"metric": "nope", "stop_if": "rate < 1"}, "gates[0].metric"),
        ({"metric": "exact", "stop_if": "rate <"}, "does not parse"),
        ({"metric": "exact", "stop_if": "__import__('os')"}, "gates[0].stop_if"),
        ({"metric": "exact", "stop_if": "mean < 1"}, "unknown name 'mean'"),
        ({"metric": "exact", "stop_if": "rate < 'x'"}, "only numbers"),
    ],
)
def test_bad_gates_are_one_line_exit_2(cli: Cli, gate: dict[str, Any], fragment: str) -> None:
    result = cli("run", config(0.5, gate, n=4))
    assert result.code == 2 and fragment in result.err, result.err
    assert "\n" not in result.err.strip()
    assert not Path("runs").exists() or not list(Path("runs").iterdir())


def test_rules_decide_on_the_interval() -> None:
    experiment = Experiment.model_validate(
        {
            **base_config(scores={"ok": {"regex": "x"}}),
            "gates": [{"metric": "ok", "min_n": 5, "stop_if": "ci_high < 0.5"}],
        }
    )
    gates = Gates(experiment, "")

    def record(ok: bool) -> dict[str, Any]:
        return {"status": "done", "model": "m", "grid": {}, "scores": {"ok": ok}}

    for _ in range(5):
        gates.add(record(False))
    assert gates.check() is not None  # 0/5: Wilson upper bound 0.43
    gates = Gates(experiment, "")
    for ok in (False, False, False, False, True):
        gates.add(record(ok))
    assert gates.check() is None  # 1/5: upper bound 0.62
