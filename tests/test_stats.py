"""trialrun.stats against independent oracles: statsmodels and scipy computed here,
and textbook values where a source gives them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.inter_rater import cohens_kappa as sm_cohens_kappa
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize

from trialrun import stats
from trialrun.errors import TrialrunError
from trialrun.stats import (
    adjust_p_values,
    clustered_mcnemar,
    cohens_kappa,
    compare_paired,
    mcnemar,
    mean_se,
    proportion_ci,
)

# -- proportion_ci ----------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 10), (3, 10), (10, 10), (81, 263), (999, 1000)])
@pytest.mark.parametrize(
    ("method", "sm_method"), [("wilson", "wilson"), ("clopper-pearson", "beta")]
)
def test_proportion_ci_matches_statsmodels(k: int, n: int, method: str, sm_method: str) -> None:
    ci = proportion_ci(k, n, method=method)  # type: ignore[arg-type]
    low, high = proportion_confint(k, n, alpha=0.05, method=sm_method)
    assert ci.low == pytest.approx(low, abs=1e-9)
    assert ci.high == pytest.approx(high, abs=1e-9)
    assert ci.estimate == k / n
    assert ci.method == method


# Newcombe (1998), "Two-sided confidence intervals for the single proportion",
# Statistics in Medicine 17:857-872, Table II: methods 3 (Wilson) and 5 (exact).
NEWCOMBE = [
    (81, 263, (0.2553, 0.3662), (0.2527, 0.3676)),
    (15, 148, (0.0624, 0.1605), (0.0578, 0.1617)),
    (0, 20, (0.0, 0.1611), (0.0, 0.1684)),
    (1, 29, (0.0061, 0.1718), (0.0009, 0.1776)),
]


@pytest.mark.parametrize(("k", "n", "wilson", "exact"), NEWCOMBE)
def test_proportion_ci_gives_newcombes_textbook_intervals(
    k: int, n: int, wilson: tuple[float, float], exact: tuple[float, float]
) -> None:
    w = proportion_ci(k, n)
    e = proportion_ci(k, n, method="clopper-pearson")
    assert (round(w.low or 0, 4), round(w.high or 0, 4)) == wilson
    assert (round(e.low or 0, 4), round(e.high or 0, 4)) == exact


def test_proportion_ci_of_no_trials_is_undefined_not_zero() -> None:
    ci = proportion_ci(0, 0)
    assert not ci.defined
    assert (ci.estimate, ci.low, ci.high) == (None, None, None)
    assert "undefined" in ci.method


def test_proportion_ci_at_zero_and_all_successes_reaches_the_bound() -> None:
    none, every = proportion_ci(0, 30), proportion_ci(30, 30)
    assert none.low == 0.0 and 0 < (none.high or 0) < 0.2
    assert every.high == 1.0 and 0.8 < (every.low or 0) < 1


def test_proportion_ci_rejects_more_successes_than_trials() -> None:
    with pytest.raises(ValueError, match="successes"):
        proportion_ci(5, 4)


# -- mean_se --------------------------------------------------------------------------


def test_naive_mean_se_matches_scipy_and_ols() -> None:
    scores = list(np.random.default_rng(1).normal(0.6, 0.2, 50))
    est = mean_se(scores)
    ols = sm.OLS(np.array(scores), np.ones(50)).fit()
    assert est.mean == pytest.approx(float(np.mean(scores)))
    assert est.se == pytest.approx(float(sps.sem(scores)))
    assert est.se == pytest.approx(float(ols.bse[0]))
    assert est.low == pytest.approx(est.mean - 1.959964 * est.se)  # type: ignore[operator]
    assert est.method.startswith("naive")


def miller_brute_force(scores: list[float], items: list[str]) -> float:
    """Miller (2024) clustered SE written out as the triple sum, for the oracle."""
    n, m = len(scores), float(np.mean(scores))
    naive2 = float(np.var(scores, ddof=1)) / n
    cross = sum(
        (scores[i] - m) * (scores[j] - m)
        for i in range(n)
        for j in range(n)
        if i != j and items[i] == items[j]
    )
    return math.sqrt(naive2 + cross / n**2)


def clustered_sample(seed: int) -> tuple[list[float], list[str]]:
    rng = np.random.default_rng(seed)
    effects = rng.normal(0, 0.3, 20)
    items = [f"q{i}" for i in range(20) for _ in range(rng.integers(1, 5))]
    scores = [float(effects[int(q[1:])] + rng.normal(0, 0.1)) for q in items]
    return scores, items


def test_clustered_se_is_millers_formula_and_the_sandwich_plus_its_diagonal() -> None:
    scores, items = clustered_sample(2)
    est = mean_se(scores, items=items)
    assert est.se == pytest.approx(miller_brute_force(scores, items))
    # statsmodels' cluster-robust SE without small-sample correction is
    # (1/n^2) sum_c (sum_i d_ic)^2; Miller's uses n - 1 on the diagonal instead of n.
    y, n = np.array(scores), len(scores)
    fit = sm.OLS(y, np.ones(n)).fit(
        cov_type="cluster", cov_kwds={"groups": np.unique(items, return_inverse=True)[1],
                                      "use_correction": False}
    )  # fmt: skip
    diagonal = float(np.sum((y - y.mean()) ** 2)) / n**2 / (n - 1)
    assert est.se**2 == pytest.approx(float(fit.bse[0]) ** 2 + diagonal)  # type: ignore[operator]
    assert est.se > mean_se(scores).se  # type: ignore[operator]
    assert est.clusters == 20 and est.method.startswith("clustered")


def test_clustered_se_with_every_item_once_is_the_naive_se() -> None:
    scores = [0.1, 0.5, 0.9, 0.4, 0.3]
    assert mean_se(scores, items=list("abcde")).se == pytest.approx(mean_se(scores).se)


def test_clustered_se_of_a_single_cluster_is_undefined() -> None:
    est = mean_se([1.0, 0.0, 1.0], items=["q", "q", "q"])
    assert est.mean == pytest.approx(2 / 3)
    assert (est.se, est.low, est.high) == (None, None, None)
    assert "one cluster" in est.method


def test_mean_of_one_item_has_no_standard_error() -> None:
    est = mean_se([0.7])
    assert est.mean == 0.7 and est.se is None and "one score" in est.method


def test_mean_of_everything_missing_is_undefined_and_counts_the_missing() -> None:
    est = mean_se([None, float("nan"), None], items=["a", "b", "c"])
    assert (est.mean, est.se, est.n, est.missing) == (None, None, 0, 3)


def test_missing_scores_are_left_out_with_their_items() -> None:
    est = mean_se([1.0, None, 0.0, float("nan"), 1.0], items=list("aabbc"))
    assert (est.mean, est.n, est.missing, est.clusters) == (pytest.approx(2 / 3), 3, 2, 3)


# -- compare_paired / mcnemar -------------------------------------------------------


@pytest.mark.parametrize(("a_only", "b_only"), [(1, 0), (7, 2), (12, 12), (20, 4), (24, 0)])
def test_mcnemar_below_25_discordant_is_the_exact_test(a_only: int, b_only: int) -> None:
    statistic, p, test = mcnemar(a_only, b_only)
    oracle = sm_mcnemar([[30, a_only], [b_only, 40]], exact=True)
    assert statistic is None and p == pytest.approx(oracle.pvalue)
    assert "exact binomial" in test and "< 25" in test


@pytest.mark.parametrize(("a_only", "b_only"), [(13, 12), (20, 5), (150, 86), (40, 0)])
def test_mcnemar_from_25_discordant_is_chi_square_corrected(a_only: int, b_only: int) -> None:
    statistic, p, test = mcnemar(a_only, b_only)
    oracle = sm_mcnemar([[30, a_only], [b_only, 40]], exact=False, correction=True)
    assert statistic == pytest.approx(oracle.statistic)
    assert p == pytest.approx(oracle.pvalue)
    assert "continuity correction" in test and ">= 25" in test


def test_mcnemar_on_agrestis_approval_ratings() -> None:
    # Agresti, An Introduction to Categorical Data Analysis (2nd ed.), sec. 8.1: 150 and
    # 86 discordant; corrected statistic (|150 - 86| - 1)^2 / 236 = 16.82, p < 0.0001.
    statistic, p, _ = mcnemar(150, 86)
    assert statistic == pytest.approx(63**2 / 236) and round(statistic or 0, 2) == 16.82
    assert p < 1e-4


def test_no_discordant_pairs_gives_p_one_and_says_so() -> None:
    result = compare_paired([True, False, True], [True, False, True])
    assert result.p_value == 1.0 and "no discordant pairs" in result.test
    assert result.difference == 0.0 and (result.low, result.high) == (0.0, 0.0)


def test_no_pairs_is_an_error_saying_so() -> None:
    with pytest.raises(TrialrunError, match="no complete pairs"):
        compare_paired([], [])
    with pytest.raises(TrialrunError, match="no complete pairs"):
        compare_paired([True, None], [None, False])


def test_compare_paired_counts_and_drops_incomplete_pairs() -> None:
    a = [True, True, False, None, True, False]
    b = [True, False, True, True, False, False]
    result = compare_paired(a, b)
    assert (result.n, result.dropped, result.a_only, result.b_only) == (5, 1, 2, 1)
    assert result.rate_a == pytest.approx(0.6) and result.rate_b == pytest.approx(0.4)
    assert result.cohens_h == pytest.approx(float(proportion_effectsize(0.6, 0.4)))


def paired_sample(seed: int, n: int, p_a: float, p_b: float) -> tuple[list[bool], list[bool]]:
    """Correlated outcomes: a shared item difficulty, then each model's own noise."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    noise = rng.random(n) < 0.2
    a = np.where(noise, rng.random(n) < p_a, u < p_a)
    b = np.where(noise, rng.random(n) < p_b, u < p_b)
    return [bool(x) for x in a], [bool(x) for x in b]


def test_paired_bootstrap_is_reproducible_with_its_seed_and_agrees_with_scipy() -> None:
    a, b = paired_sample(3, 300, 0.7, 0.6)
    first, again = compare_paired(a, b, seed=7), compare_paired(a, b, seed=7)
    assert (first.low, first.high) == (again.low, again.high)
    assert "seed 7" in first.ci_method and "10000 resamples" in first.ci_method
    diffs = np.array(a, dtype=float) - np.array(b, dtype=float)
    oracle = sps.bootstrap(
        (diffs,), np.mean, method="percentile", n_resamples=10_000, random_state=1
    ).confidence_interval
    assert first.low == pytest.approx(oracle.low, abs=0.01)
    assert first.high == pytest.approx(oracle.high, abs=0.01)


def test_paired_bootstrap_ci_covers_a_known_difference() -> None:
    true_difference = 0.7 - 0.6  # u < p_a minus u < p_b, and likewise in the noise
    runs = 200
    covered = 0
    for seed in range(runs):
        a, b = paired_sample(seed, 200, 0.7, 0.6)
        result = compare_paired(a, b, resamples=1000, seed=seed)
        covered += result.low <= true_difference <= result.high
    assert 0.90 <= covered / runs <= 0.99


def test_compare_paired_rejects_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="one per unit"):
        compare_paired([True], [True, False])


# -- adjust_p_values ----------------------------------------------------------------

# Benjamini & Hochberg (1995), JRSS B 57:289-300, section 3.2: 15 p-values; at
# q* = 0.05 the step-up procedure rejects four, Bonferroni (and so Holm here) three.
BH_1995 = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459,
           0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000]  # fmt: skip


def test_benjamini_hochbergs_own_example_rejects_four() -> None:
    assert sum(q <= 0.05 for q in adjust_p_values(BH_1995).adjusted) == 4
    assert sum(q <= 0.05 for q in adjust_p_values(BH_1995, method="holm").adjusted) == 3


@pytest.mark.parametrize(("method", "sm_method"), [("bh", "fdr_bh"), ("holm", "holm")])
@pytest.mark.parametrize("seed", range(5))
def test_adjusted_p_values_match_statsmodels(method: str, sm_method: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.random(20), rng.random(5) * 0.01, [0.5, 0.5, 1.0]])
    ours = adjust_p_values(list(p), method=method)  # type: ignore[arg-type]
    oracle = multipletests(p, method=sm_method)[1]
    assert ours.adjusted == pytest.approx(list(oracle))
    assert ours.p_values == tuple(p)


@given(
    st.lists(st.floats(min_value=0, max_value=1, allow_nan=False), min_size=1, max_size=40),
    st.sampled_from(["bh", "holm"]),
)
def test_adjusted_p_values_are_monotone_at_least_p_and_at_most_one(
    p: list[float], method: str
) -> None:
    result = adjust_p_values(p, method=method)  # type: ignore[arg-type]
    q = result.adjusted
    assert all(pi <= qi <= 1 for pi, qi in zip(p, q, strict=True))
    by_p = [qi for _, qi in sorted(zip(p, q, strict=True))]
    assert by_p == sorted(by_p)


def test_an_empty_family_adjusts_to_nothing_and_bad_p_values_are_refused() -> None:
    assert adjust_p_values([]).adjusted == ()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_p_values([0.2, 1.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_p_values([float("nan")])


# -- cohens_kappa -------------------------------------------------------------------


def labels_from_table(table: list[list[int]], names: list[str]) -> tuple[list[str], list[str]]:
    a, b = [], []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            a += [names[i]] * count
            b += [names[j]] * count
    return a, b


def test_kappa_on_the_textbook_grant_example() -> None:
    # Wikipedia, "Cohen's kappa", worked example: 50 proposals, yes/yes 20, yes/no 5,
    # no/yes 10, no/no 15; p_o = 0.7, p_e = 0.5, kappa = 0.4.
    a, b = labels_from_table([[15, 10], [5, 20]], ["no", "yes"])
    result = cohens_kappa(a, b)
    assert result.kappa == pytest.approx(0.4)
    assert result.percent_agreement == pytest.approx(0.7)
    assert result.labels == ("no", "yes") and result.table == ((15, 10), (5, 20))


@pytest.mark.parametrize(
    "table",
    [[[15, 10], [5, 20]], [[22, 2, 1], [4, 30, 5], [0, 3, 18]], [[40, 1], [2, 3]]],
)
def test_kappa_and_its_interval_match_statsmodels(table: list[list[int]]) -> None:
    names = ["a", "b", "c"][: len(table)]
    result = cohens_kappa(*labels_from_table(table, names))
    oracle = sm_cohens_kappa(np.array(table))
    assert result.kappa == pytest.approx(oracle.kappa)
    assert result.se == pytest.approx(oracle.std_kappa)
    assert result.low == pytest.approx(oracle.kappa_low)
    assert result.high == pytest.approx(oracle.kappa_upp)
    assert "Fleiss-Cohen-Everitt" in result.method


def test_perfect_agreement_is_kappa_one_with_no_spread() -> None:
    result = cohens_kappa(["x", "y", "y", "z"], ["x", "y", "y", "z"])
    assert result.kappa == pytest.approx(1.0) and result.se == pytest.approx(0.0)


def test_kappa_with_one_label_throughout_is_undefined() -> None:
    result = cohens_kappa(["pass"] * 5, ["pass"] * 5)
    assert (result.kappa, result.se, result.low) == (None, None, None)
    assert result.percent_agreement == 1.0 and "undefined" in result.method


def test_kappa_drops_units_missing_a_label_and_refuses_none_left() -> None:
    result = cohens_kappa(["a", None, "b"], ["a", "b", "b"])
    assert (result.n, result.dropped) == (2, 1)
    with pytest.raises(TrialrunError, match="no unit labelled by both"):
        cohens_kappa([None, "a"], ["a", None])


def test_the_clustered_mcnemar_with_one_pair_per_item_is_the_uncorrected_mcnemar() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.random(300) < 0.7, rng.random(300) < 0.6
    codes = np.arange(300)
    statistic, p, _ = clustered_mcnemar(a & ~b, ~a & b, codes)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    oracle = sm_mcnemar(table, exact=False, correction=False)
    assert statistic == pytest.approx(oracle.statistic)
    assert p == pytest.approx(oracle.pvalue)


def test_a_cluster_bootstrap_is_wider_than_a_pair_bootstrap_when_items_agree_with_themselves() -> (
    None
):
    rng = np.random.default_rng(6)
    items = np.repeat(np.arange(100), 5)
    a = list(np.repeat(rng.random(100) < 0.6, 5))  # every repeat of an item alike
    b = list(np.repeat(rng.random(100) < 0.5, 5))
    pairs = compare_paired(a, b, seed=1)
    clustered = compare_paired(a, b, clusters=list(items), seed=1)
    assert clustered.difference == pairs.difference
    assert (clustered.high - clustered.low) > 1.8 * (pairs.high - pairs.low)  # about sqrt(5)
    assert clustered.test.startswith("clustered McNemar") and "items" in clustered.ci_method


def test_a_clustered_rate_is_wilson_at_the_effective_n() -> None:
    from statsmodels.stats.proportion import proportion_confint

    # 10 items x 3 repeats, strongly correlated within items: deff > 1
    values: list[float | None] = []
    items: list[int] = []
    for item in range(10):
        for _ in range(3):
            values.append(1.0 if item < 4 else 0.0)
            items.append(item)
    values[0] = 0.0  # not all identical within every item
    ci = stats.clustered_proportion_ci(values, items)
    est = stats.mean_se(values, items=items)
    p = est.mean
    assert p is not None and est.se is not None
    n_eff = 30 * (p * (1 - p) / 30) / est.se**2
    assert 10 <= n_eff < 30
    low, high = proportion_confint(p * n_eff, n_eff, method="wilson")
    assert ci.low == pytest.approx(low) and ci.high == pytest.approx(high)
    assert f"{n_eff:.1f}" in ci.method


def test_a_clustered_rate_of_one_does_not_collapse_to_a_point() -> None:
    from statsmodels.stats.proportion import proportion_confint

    ci = stats.clustered_proportion_ci([1.0] * 12, [i // 3 for i in range(12)])
    low, high = proportion_confint(4, 4, method="wilson")  # the 4 items stand in for n
    assert ci.estimate == 1.0 and ci.low == pytest.approx(low) and ci.high == pytest.approx(high)
    assert ci.low < 0.6
