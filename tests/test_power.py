"""Power, precision and the budget frontier (`trialrun.power`, `trialrun power`): each
formula against a simulation, statsmodels or scipy computed here, and the command's
numbers against the estimate and the pilot they come from."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from conftest import CliResult, read_results
from trialrun import api, power
from trialrun.estimate import estimate

Cli = Callable[..., CliResult]


def _mcnemar_rejections(n: int, psi: float, delta: float, reps: int, seed: int) -> float:
    """The share of simulated studies of n pairs in which McNemar's (uncorrected) test
    rejects at 0.05: the pairs drawn as (p10, p01, concordant) multinomials."""
    rng = np.random.default_rng(seed)
    p10, p01 = (psi + delta) / 2, (psi - delta) / 2
    draws = rng.multinomial(n, [p10, p01, 1 - psi], size=reps)
    b, c = draws[:, 0].astype(float), draws[:, 1].astype(float)
    statistic = (b - c) ** 2 / np.maximum(b + c, 1)
    return float(np.mean(sps.chi2.sf(statistic, 1) < 0.05))


@pytest.mark.parametrize(("psi", "delta"), [(0.2, 0.1), (0.3, 0.05), (0.44, 0.05)])
def test_the_sample_size_gives_the_power_asked_for_in_simulation(psi: float, delta: float) -> None:
    n = power.mcnemar_sample_size(psi, delta, alpha=0.05, power=0.8)
    # a normal approximation: within 0.03 of the exact (simulated) power at n >= 150
    assert abs(_mcnemar_rejections(n, psi, delta, 20_000, seed=1) - 0.8) < 0.03
    assert power.mcnemar_power(n, psi, delta) >= 0.8 > power.mcnemar_power(n - 1, psi, delta)


def test_connor_1987_by_hand() -> None:
    # psi = 0.2, delta = 0.1: ((1.95996 * 0.44721 + 0.84162 * 0.43589) / 0.1)^2 = 154.6
    assert power.mcnemar_sample_size(0.2, 0.1) == 155
    assert power.mcnemar_sample_size(0.2, -0.1) == 155


def test_the_detectable_difference_inverts_the_power() -> None:
    mde = power.mcnemar_mde(800, 0.3)
    assert mde is not None
    assert power.mcnemar_power(800, 0.3, mde) == pytest.approx(0.8, abs=1e-6)
    assert power.mcnemar_mde(3, 0.01) is None  # 3 pairs cannot show anything


@pytest.mark.parametrize(("k", "n"), [(0, 20), (7, 20), (560, 800), (1200, 1200), (3, 1000)])
def test_the_wilson_half_width_matches_statsmodels(k: int, n: int) -> None:
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert power.wilson_half_width(k / n, n) == pytest.approx((high - low) / 2)


def test_the_paired_half_width_is_z_times_the_se_of_the_mean_difference() -> None:
    differences = np.array([1] * 120 + [-1] * 80 + [0] * 800)  # psi 0.2, delta 0.04
    se = differences.std() / math.sqrt(len(differences))
    assert power.paired_half_width(1000, 0.2, 0.04) == pytest.approx(1.959964 * se, rel=1e-6)


def test_an_effect_larger_than_the_discordance_is_refused() -> None:
    with pytest.raises(ValueError, match="discordant fraction of at least"):
        power.mcnemar_sample_size(0.05, 0.1)


def test_variance_components_match_a_one_way_anova() -> None:
    rng = np.random.default_rng(3)
    sizes = [5] * 30 + [3] * 20  # unbalanced
    means = rng.normal(0, 0.3, len(sizes))
    values = [m + rng.normal(0, 1.0) for m, k in zip(means, sizes, strict=True) for _ in range(k)]
    items = [i for i, k in enumerate(sizes) for _ in range(k)]
    found = power.variance_components(values, items)
    groups = [np.array(values)[np.array(items) == i] for i in range(len(sizes))]
    f = sps.f_oneway(*groups).statistic
    msw = sum(((g - g.mean()) ** 2).sum() for g in groups) / (len(values) - len(sizes))
    n = len(values)
    k0 = (n - sum(k * k for k in sizes) / n) / (len(sizes) - 1)
    assert found.within == pytest.approx(msw)
    assert found.between == pytest.approx((f - 1) * msw / k0)
    balanced = power.variance_components(values[:150], items[:150])
    f5 = sps.f_oneway(*groups[:30]).statistic
    assert balanced.icc == pytest.approx((f5 - 1) / (f5 + 5 - 1))  # the ANOVA ICC
    assert balanced.design_effect(5) == pytest.approx(1 + 4 * balanced.icc)


def test_the_best_repeats_beat_every_other_k_for_the_same_budget() -> None:
    components = power.VarianceComponents(between=0.02, within=0.2, items=100, repeats=3)
    plan = power.optimal_repeats(components, 500.0, cost_sample=0.01, cost_item=0.5)
    assert plan.unconstrained == pytest.approx(math.sqrt(0.5 * 0.2 / (0.01 * 0.02)))

    def half(k: int) -> float:
        m = math.floor(500.0 / (0.5 + k * 0.01))
        return 1.959964 * math.sqrt((0.02 + 0.2 / k) / m)

    assert plan.half_width == pytest.approx(min(half(k) for k in range(1, 101)), rel=1e-6)
    free_items = power.optimal_repeats(components, 500.0, cost_sample=0.01)
    assert (free_items.repeats, free_items.items) == (1, 50_000)


def test_the_frontier_buys_floor_budget_over_cost_units() -> None:
    rows = power.frontier([20, 50, 300], 0.05, rate=0.7, discordance=0.2)
    assert [r.n for r in rows] == [400, 1000, 6000]
    assert rows[0].rate_half_width == pytest.approx(power.wilson_half_width(0.7, 400))
    widths = [r.diff_half_width for r in rows]
    assert widths == sorted(widths, reverse=True)


def _power_json(cli: Cli, *args: str) -> dict[str, Any]:
    result = cli("power", *args, "--json")
    assert result.code == 0, result.err
    parsed: dict[str, Any] = json.loads(result.out)
    return parsed


def test_power_from_expected_rates(cli: Cli) -> None:
    got = _power_json(cli, "--rate", "0.7", "--discordance", "0.2", "--effect", "0.1", "--n", "800")
    assert got["n_needed"] == 155
    assert got["at_n"]["detectable"] == pytest.approx(power.mcnemar_mde(800, 0.2))
    text = cli("power", "--rate", "0.7", "--discordance", "0.2", "--effect", "0.1").out
    assert "155 units" in text and "Connor 1987" in text


def _config(tmp_path: Path, mode: str) -> Path:
    config = {
        "name": "priced",
        "dataset": {"items": [{"id": f"q{i}", "prompt": f"Question {i}?"} for i in range(50)]},
        "models": [{"model": "openai/gpt-4o-mini"}],
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "params": {"max_tokens": 100},
        "repeats": 2,
        "mode": mode,
    }
    path = tmp_path / f"{mode}.yaml"
    path.write_text(json.dumps(config))
    return path


def test_the_frontier_from_a_config_uses_the_plan_estimate_with_the_batch_discount(
    cli: Cli, tmp_path: Path
) -> None:
    costs = {}
    for mode in ("realtime", "batch"):
        path = _config(tmp_path, mode)
        got = _power_json(cli, "--config", str(path), "--rate", "0.7", "--discordance", "0.2",
                          "--budget", "1,5")  # fmt: skip
        prepared = api.load(path, need_keys=False)
        unit = estimate(prepared).total(batch=mode == "batch") / 100
        assert got["frontier"]["cost_per_unit"] == pytest.approx(unit)
        assert [r["n"] for r in got["frontier"]["rows"]] == [math.floor(b / unit) for b in (1, 5)]
        costs[mode] = unit
    assert costs["batch"] == pytest.approx(costs["realtime"] / 2)


def test_a_pilot_gives_rate_discordance_and_repeats(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    items = [{"id": f"q{i}", "prompt": f"{i}+1?", "answer": str(i + 1)} for i in range(60)]
    write_config(
        dataset={"items": items}, grid={}, followups=[], repeats=3, cache={"enabled": False},
        models=[{"model": "mock/a", "options": {"accuracy": 0.8}},
                {"model": "mock/b", "options": {"accuracy": 0.6}}],
        messages=[{"role": "user", "content": "{{ item.prompt }}"}],
        mock={"answer": "{{ item.answer }}"}, scores={"ok": {"equals": "{{ item.answer }}"}},
    )  # fmt: skip
    assert cli("run", "exp.yaml").code == 0
    (run,) = (tmp_path / "runs").iterdir()
    records = read_results(run)
    got = _power_json(cli, "--pilot", run.name, "--budget", "10", "--cost-per-unit", "0.01")
    assert got["rate"] == pytest.approx(np.mean([r["scores"]["ok"] for r in records]))
    outcome = {(r["model"], r["item_id"], r["repeat"]): r["scores"]["ok"] for r in records}
    keys = [(i, k) for _, i, k in outcome if _ == "mock/a"]
    discordant = sum(outcome[("mock/a", *key)] != outcome[("mock/b", *key)] for key in keys)
    assert got["discordance"] == pytest.approx(discordant / len(keys))
    assert got["pilot"]["units"] == 180 and got["pilot"]["cells"] == 2
    assert got["repeats"]["plans"]["10.0"]["repeats"] == 1  # items cost nothing extra
    assert got["frontier"]["rows"][0]["n"] == 1000
    result = cli("power", "--pilot", run.name, "--budget", "10")
    assert result.code == 2 and "cost nothing" in result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --rate and --discordance, or a --pilot"),
        (("--rate", "0.5", "--discordance", "0.05", "--effect", "0.1"), "at least"),
        (("--rate", "0.5", "--budget", "10"), "--budget needs a cost"),
        (("--rate", "0.5", "--budget", "ten", "--cost-per-unit", "1"), "give amounts in USD"),
    ],
)
def test_power_bad_input_is_one_line_and_exit_2(
    cli: Cli, args: tuple[str, ...], message: str
) -> None:
    result = cli("power", *args)
    assert result.code == 2 and message in result.err
