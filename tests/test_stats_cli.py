"""`trialrun stats` and `trialrun compare` on runs of the graded mock: the printed numbers
against an independent computation from results.jsonl (statsmodels as the oracle), the
documented `--json` keys, missing values counted, and one-line refusals of bad input."""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize

from conftest import CliResult, read_results

Cli = Callable[..., CliResult]
GROUP_KEYS = {"model", "grid", "strata", "n", "missing", "successes", "rate", "ci_low",
              "ci_high", "ci_method"}  # fmt: skip
COMPARISON_KEYS = {"a", "b", "strata", "n_pairs", "a_only", "b_only", "diff", "diff_ci_low",
                   "diff_ci_high", "p_value", "test", "q_value", "cohens_h"}  # fmt: skip


def _items(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"q{i}", "prompt": f"What is {i} + 1?", "answer": str(i + 1), "kind": f"k{i % 3}"}
        for i in range(n)
    ]


def _run(
    cli: Cli,
    write_config: Callable[..., Path],
    tmp_path: Path,
    name: str = "exp.yaml",
    *,
    items: int = 120,
    models: tuple[tuple[str, float], ...] = (("mock/alpha", 0.8), ("mock/beta", 0.6)),
    code: int = 0,
    **changes: Any,
) -> Path:
    config: dict[str, Any] = {
        "dataset": {"items": _items(items)},
        "models": [{"model": m, "options": {"accuracy": acc}} for m, acc in models],
        "grid": {},
        "followups": [],
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "mock": {"answer": "{{ item.answer }}", "accuracy": 0.7},
        "scores": {"correct": {"equals": "{{ item.answer }}"}},
        "cache": {"enabled": False},
        **changes,
    }
    write_config(name, **config)
    before = set((tmp_path / "runs").iterdir()) if (tmp_path / "runs").exists() else set()
    result = cli("run", name)
    assert result.code == code, result.err  # 3: some trials failed
    (made,) = set((tmp_path / "runs").iterdir()) - before
    return made


def _stats_json(cli: Cli, *args: str) -> dict[str, Any]:
    result = cli("stats", *args, "--json")
    assert result.code == 0, result.err
    parsed: dict[str, Any] = json.loads(result.out)
    return parsed


def _key(record: dict[str, Any], by: str | None) -> tuple[str, str, str]:
    stratum = "" if by is None else str(record["item"][by])
    return record["model"], json.dumps(record["grid"], sort_keys=True), stratum


def _expected_groups(records: list[dict[str, Any]], by: str | None) -> dict[Any, Any]:
    groups: dict[Any, list[bool | None]] = defaultdict(list)
    for r in records:
        groups[_key(r, by)].append(r["scores"].get("correct") if r["status"] == "done" else None)
    out = {}
    for key, values in groups.items():
        present = [v for v in values if v is not None]
        k, n = sum(present), len(present)
        low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
        out[key] = (n, len(values) - n, k, k / n, low, high)
    return out


def test_stats_json_matches_an_independent_computation_from_results_jsonl(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path, grid={"temperature": [0.0, 0.7]})
    got = _stats_json(cli, run.name, "--compare", "model", "--by", "item.kind")
    records = read_results(run)
    assert got["metric"] == "correct"
    expected = _expected_groups(records, "kind")
    assert len(got["groups"]) == len(expected) == 2 * 2 * 3
    for g in got["groups"]:
        assert set(g) >= GROUP_KEYS
        key = (g["model"], json.dumps(g["grid"], sort_keys=True), g["strata"]["item.kind"])
        n, missing, k, rate, low, high = expected[key]
        assert (g["n"], g["missing"], g["successes"]) == (n, missing, k)
        assert g["rate"] == pytest.approx(rate)
        assert (g["ci_low"], g["ci_high"]) == (pytest.approx(low), pytest.approx(high))
        assert g["ci_method"] == "wilson"
    by_trial = {(r["model"], r["grid"]["temperature"], r["item_id"]): r for r in records}
    p_values = []
    assert len(got["comparisons"]) == 2 * 3
    for c in got["comparisons"]:
        assert set(c) >= COMPARISON_KEYS
        temp, kind = c["a"]["grid"]["temperature"], c["strata"]["item.kind"]
        ids = sorted(
            {i for (_, t, i), r in by_trial.items() if t == temp and r["item"]["kind"] == kind}
        )
        a = np.array([by_trial[(c["a"]["model"], temp, i)]["scores"]["correct"] for i in ids])
        b = np.array([by_trial[(c["b"]["model"], temp, i)]["scores"]["correct"] for i in ids])
        a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
        table = [[int(np.sum(a & b)), a_only], [b_only, int(np.sum(~a & ~b))]]
        exact = a_only + b_only < 25
        oracle = mcnemar(table, exact=exact, correction=True)
        assert (c["n_pairs"], c["a_only"], c["b_only"]) == (len(ids), a_only, b_only)
        assert c["p_value"] == pytest.approx(oracle.pvalue)
        assert c["test"].startswith("McNemar exact" if exact else "McNemar chi-square")
        assert c["diff"] == pytest.approx(a.mean() - b.mean())
        assert c["diff_ci_low"] <= c["diff"] <= c["diff_ci_high"]
        assert c["cohens_h"] == pytest.approx(proportion_effectsize(a.mean(), b.mean()))
        p_values.append(c["p_value"])
    q = multipletests(p_values, method="fdr_bh")[1]
    assert [c["q_value"] for c in got["comparisons"]] == pytest.approx(list(q))


def test_bh_q_values_are_never_below_p_and_monotone_in_p(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path, items=300, grid={"temperature": [0.0, 0.5, 1.0]})
    got = _stats_json(cli, run.name, "--compare", "model", "--by", "item.kind")
    rows = sorted(got["comparisons"], key=lambda c: c["p_value"])
    assert len(rows) == 9
    assert all(c["q_value"] >= c["p_value"] for c in rows)
    assert all(x["q_value"] <= y["q_value"] for x, y in itertools.pairwise(rows))


def test_compare_grid_key_pairs_its_values_within_each_model(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path, grid={"temperature": [0.0, 0.7], "top_p": [1.0]})
    got = _stats_json(cli, run.name, "--compare", "grid.temperature")
    assert len(got["comparisons"]) == 2
    for c in got["comparisons"]:
        assert c["a"]["model"] == c["b"]["model"]
        assert (c["a"]["grid"]["temperature"], c["b"]["grid"]["temperature"]) == (0.0, 0.7)
        assert c["a"]["grid"]["top_p"] == c["b"]["grid"]["top_p"] == 1.0
        assert c["n_pairs"] == 120


def test_with_repeats_the_ci_is_clustered_by_item_and_says_so(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path, items=40, repeats=3)
    got = _stats_json(cli, run.name)
    for g in got["groups"]:
        assert g["n"] == 120
        assert "clustered by item" in g["ci_method"]
        assert 0 <= g["ci_low"] <= g["rate"] <= g["ci_high"] <= 1
    text = cli("stats", run.name).out
    assert "clustered" in text and "repeats" in text


def test_failed_trials_are_counted_as_missing_and_shown(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(
        cli, write_config, tmp_path,
        mock={"answer": "{{ item.answer }}", "accuracy": 0.7, "errors": {"server": 0.3}},
        retry={"attempts": 1}, code=3,
    )  # fmt: skip
    records = read_results(run)
    failed = sum(r["status"] == "failed" for r in records)
    assert failed > 0
    got = _stats_json(cli, run.name, "--compare", "model")
    assert sum(g["missing"] for g in got["groups"]) == failed
    assert sum(g["n"] + g["missing"] for g in got["groups"]) == len(records)
    (c,) = got["comparisons"]
    both = {r["item_id"] for r in records if r["status"] == "done" and r["model"] == "mock/alpha"}
    both &= {r["item_id"] for r in records if r["status"] == "done" and r["model"] == "mock/beta"}
    assert c["n_pairs"] == len(both)
    assert "missing" in cli("stats", run.name).out


def test_everything_missing_gives_undefined_rates_and_refuses_to_compare(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(
        cli, write_config, tmp_path, items=5,
        mock={"answer": "{{ item.answer }}", "errors": {"server": 1.0}}, retry={"attempts": 1}, code=1,
    )  # fmt: skip
    got = _stats_json(cli, run.name)
    for g in got["groups"]:
        assert (g["n"], g["missing"], g["rate"], g["ci_low"]) == (0, 5, None, None)
    result = cli("stats", run.name, "--compare", "model")
    assert result.code == 2 and "no complete pairs" in result.err


def test_zero_and_all_successes_and_no_discordant_pairs(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    models = (("mock/right", 1.0), ("mock/also", 1.0), ("mock/wrong", 0.0))
    run = _run(cli, write_config, tmp_path, items=30, models=models)
    got = _stats_json(cli, run.name, "--compare", "model", "--ci-method", "exact")
    rates = {g["model"]: (g["successes"], g["ci_low"], g["ci_high"]) for g in got["groups"]}
    low, high = proportion_confint(30, 30, method="beta")
    assert rates["mock/right"] == (30, pytest.approx(low), pytest.approx(high, abs=1e-12))
    assert rates["mock/wrong"][:2] == (0, pytest.approx(0.0, abs=1e-12))
    same = next(c for c in got["comparisons"] if c["b"]["model"] == "mock/also")
    assert (same["a_only"], same["b_only"], same["p_value"], same["diff"]) == (0, 0, 1.0, 0.0)
    assert "no discordant pairs" in same["test"]
    apart = next(c for c in got["comparisons"] if c["b"]["model"] == "mock/wrong")
    assert apart["a_only"] == 30 and apart["cohens_h"] == pytest.approx(math.pi)


def test_one_item_and_a_single_stratum(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path, items=1)
    got = _stats_json(cli, run.name, "--by", "item.answer", "--compare", "model")
    assert [g["n"] for g in got["groups"]] == [1, 1]
    assert [g["strata"] for g in got["groups"]] == [{"item.answer": "1"}] * 2
    (c,) = got["comparisons"]
    assert c["n_pairs"] == 1 and c["test"].startswith("McNemar")


def test_a_numeric_score_gets_means_and_a_paired_t_test(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lengths.py").write_text(
        "def length(item, record):\n"
        "    text = record['turns'][-1]['response']\n"
        "    return None if item['answer'].endswith('7') else float(len(text))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run = _run(cli, write_config, tmp_path, scores={"length": {"function": "lengths:length"}})
    got = _stats_json(cli, run.name, "--compare", "model")
    records = read_results(run)
    assert got["kind"] == "numeric"
    for g in got["groups"]:
        values = [r["scores"]["length"] for r in records if r["model"] == g["model"]]
        present = [v for v in values if v is not None]
        assert (g["n"], g["missing"], g["successes"]) == (len(present), 12, None)
        assert g["rate"] == pytest.approx(np.mean(present))
    (c,) = got["comparisons"]
    assert c["test"].startswith("paired t-test") and c["cohens_h"] is None
    assert c["n_pairs"] == 108


def test_compare_two_runs_of_one_model_each_labels_the_sides_by_model(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    first = _run(cli, write_config, tmp_path, "a.yaml", models=(("mock/base", 0.5),))
    second = _run(cli, write_config, tmp_path, "b.yaml", models=(("mock/sft", 0.8),))
    result = cli("compare", first.name, second.name, "--json")
    assert result.code == 0, result.err
    got = json.loads(result.out)
    (c,) = got["comparisons"]
    assert (c["a"]["model"], c["b"]["model"]) == ("mock/base", "mock/sft")
    assert (c["a"]["run"], c["b"]["run"]) == (first.name, second.name)
    a = {r["item_id"]: r["scores"]["correct"] for r in read_results(first)}
    b = {r["item_id"]: r["scores"]["correct"] for r in read_results(second)}
    assert c["a_only"] == sum(a[i] and not b[i] for i in a)
    assert c["diff"] == pytest.approx((sum(a.values()) - sum(b.values())) / len(a))
    assert any("labelled by model" in note for note in got["notes"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--metric", "nope"), "no metric 'nope' in this run; metrics here: correct"),
        (("--metric", "judge.answer=pass"), "no metric 'judge.answer=pass'"),
        (("--compare", "grid.nope"), "no grid key 'nope'"),
        (("--compare", "item"), "give model or grid.KEY"),
        (("--by", "item.nope"), "--by item.nope: no item has that field"),
        (("--by", "category"), "give item.FIELD, grid.KEY or model"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cli: Cli,
    write_config: Callable[..., Path],
    tmp_path: Path,
    args: tuple[str, ...],
    message: str,
) -> None:
    run = _run(cli, write_config, tmp_path, items=4)
    result = cli("stats", run.name, *args)
    assert result.code == 2
    assert message in result.err and len(result.err.strip().splitlines()) == 1


def test_compare_on_a_field_with_one_value_and_runs_without_pairs_are_refused(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    one = _run(cli, write_config, tmp_path, "a.yaml", items=4, models=(("mock/solo", 0.5),))
    result = cli("stats", one.name, "--compare", "model")
    assert result.code == 2 and "only one value of model" in result.err
    other = _run(cli, write_config, tmp_path, "b.yaml", items=4, models=(("mock/x", 0.5),),
                 dataset={"items": [{"id": "z", "prompt": "?", "answer": "1", "kind": "k"}]})  # fmt: skip
    result = cli("compare", one.name, other.name)
    assert result.code == 2 and "no matched pairs" in result.err


def test_with_repeats_comparisons_resample_items_and_use_the_clustered_mcnemar(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path, items=60, repeats=4)
    got = _stats_json(cli, run.name, "--compare", "model")
    (c,) = got["comparisons"]
    outcome = {(r["model"], r["item_id"], r["repeat"]): r["scores"]["correct"]
               for r in read_results(run)}  # fmt: skip
    per_item: dict[str, int] = defaultdict(int)
    for (model, item, repeat), right in outcome.items():
        if model == "mock/alpha":
            other = outcome[("mock/beta", item, repeat)]
            per_item[item] += int(right and not other) - int(other and not right)
    d = np.array(list(per_item.values()), dtype=float)
    statistic = d.sum() ** 2 / np.sum(d**2)  # Durkalski et al. 2003
    assert c["test"].startswith("clustered McNemar (Durkalski 2003)")
    assert c["p_value"] == pytest.approx(float(sps.chi2.sf(statistic, 1)))
    assert c["n_pairs"] == 240 and "resamples of items" in c["diff_ci_method"]
    assert c["diff_ci_low"] <= c["diff"] <= c["diff_ci_high"]


def test_judge_fields_are_metrics_and_the_first_one_is_the_default(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    schema = {"answer": ["pass", "fail"], "score": "int", "reasoning": "str"}
    run = _run(
        cli, write_config, tmp_path, items=30, scores={},
        judge={"model": "mock/judge", "prompt": "Grade: {{ response }}", "schema": schema},
    )  # fmt: skip
    records = read_results(run)
    got = _stats_json(cli, run.name, "--compare", "model")
    assert got["metric"] == "judge.answer=pass" and got["kind"] == "binary"
    for g in got["groups"]:
        verdicts = [r["judge"]["answer"] for r in records if r["model"] == g["model"]]
        assert (g["n"], g["successes"]) == (30, verdicts.count("pass"))
    scored = _stats_json(cli, run.name, "--metric", "judge.score")
    assert scored["kind"] == "numeric"
    for g in scored["groups"]:
        values = [r["judge"]["score"] for r in records if r["model"] == g["model"]]
        assert g["rate"] == pytest.approx(np.mean(values))
    named = _stats_json(cli, run.name, "--metric", "judges.judge.answer=fail")
    assert [g["successes"] for g in named["groups"]] == [30 - g["successes"] for g in got["groups"]]
    result = cli("stats", run.name, "--metric", "judge.answer")
    assert result.code == 2 and "judge.answer=pass" in result.err
    result = cli("stats", run.name, "--metric", "judge.score=x")
    assert result.code == 2 and "is a number" in result.err
