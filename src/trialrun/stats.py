"""Statistics a reviewer accepts: rows in, estimates out (STYLE.md 12).

Pure functions over numpy and scipy; no distribution is written by hand. Each returns a
small frozen dataclass whose `method` (or `test`) field names what was computed, so a
report can print the estimate with the words that justify it.

    proportion_ci       a rate with its Wilson (default) or Clopper-Pearson interval
    mean_se             a mean, its standard error (naive or clustered by item), a CI
    compare_paired      two binary outcomes on the same units: McNemar, the difference
                        of rates with a paired-bootstrap CI, Cohen's h
    compare_paired_means  two numeric outcomes on the same units: paired t-test, the
                        mean difference with a paired-bootstrap CI
    adjust_p_values     Benjamini-Hochberg q-values (or Holm) for a family of p-values
    cohens_kappa        agreement of two raters: kappa with its CI, percent agreement,
                        the confusion table

Undefined is said, not faked: a rate of zero trials, a mean of nothing, a standard
error from one value or one cluster come back as `None`, never as 0 or a crash. Inputs
that cannot be analysed at all (no pairs to compare) raise `TrialrunError` saying so;
malformed arguments (lengths that differ, a p-value of 2) raise `ValueError`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from trialrun.errors import TrialrunError


class LazyModule:
    """A module imported on first use: scipy.stats takes ~0.8 s to import, and every
    `trialrun` command imports this module (through the API), most never computing."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


sps: Any = LazyModule("scipy.stats")

ProportionMethod = Literal["wilson", "clopper-pearson"]
AdjustMethod = Literal["bh", "holm"]

#: Fewer discordant pairs than this and McNemar's test is the exact binomial one.
EXACT_BELOW = 25


def _z(confidence: float) -> float:
    """The two-sided normal quantile for `confidence` (1.96 for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    return float(sps.norm.ppf(0.5 + confidence / 2))


# -- a proportion -------------------------------------------------------------------


@dataclass(frozen=True)
class ProportionCI:
    """A rate `successes / n` with its interval; all three are `None` when n is 0."""

    successes: int
    n: int
    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    method: str

    @property
    def defined(self) -> bool:
        return self.estimate is not None


def proportion_ci(
    successes: int,
    n: int,
    *,
    method: ProportionMethod = "wilson",
    confidence: float = 0.95,
) -> ProportionCI:
    """The rate with a Wilson score interval, or the exact Clopper-Pearson one on request.

    Both come from `scipy.stats.binomtest(...).proportion_ci`. With `n == 0` the rate is
    undefined: estimate, low and high are `None` and `method` says why.
    """
    _z(confidence)
    if method not in ("wilson", "clopper-pearson"):
        raise ValueError(f"method must be 'wilson' or 'clopper-pearson', not {method!r}")
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        undefined = f"{method}: undefined, no trials (n = 0)"
        return ProportionCI(0, 0, None, None, None, confidence, undefined)
    scipy_method = "wilson" if method == "wilson" else "exact"
    ci = sps.binomtest(successes, n).proportion_ci(confidence, method=scipy_method)
    low, high = float(ci.low), float(ci.high)
    return ProportionCI(successes, n, successes / n, low, high, confidence, method)


# -- a mean ---------------------------------------------------------------------------


def clustered_proportion_ci(
    successes: Sequence[float | None],
    items: Sequence[Hashable],
    *,
    confidence: float = 0.95,
) -> ProportionCI:
    """A rate whose values repeat within items: the Wilson interval at the effective sample
    size n / deff (Korn & Graubard 1998), the design effect deff = (SE_clustered /
    SE_naive)^2 from Miller 2024's clustered standard error (`mean_se`). At a rate of 0 or
    1 both standard errors vanish and the number of items stands in for n, so an interval
    never collapses to a point. Wilson (not the normal interval) keeps it inside [0, 1]."""
    z = _z(confidence)
    estimate = mean_se(successes, items=items, confidence=confidence)
    n = estimate.n
    kept = len({i for i, v in zip(items, successes, strict=True) if v is not None})
    if n == 0 or estimate.mean is None:
        return ProportionCI(0, 0, None, None, None, confidence, "no values")
    p = estimate.mean
    naive = math.sqrt(p * (1 - p) / n)
    clustered = estimate.se
    if naive > 0 and clustered is not None and clustered > 0:
        n_eff = min(max(n * (naive / clustered) ** 2, kept), n)
    else:
        n_eff = float(kept)
    centre = (p + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z / (1 + z * z / n_eff) * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff**2))
    method = f"wilson at the effective n {n_eff:.1f} of {n} (clustered by item)"
    return ProportionCI(
        round(p * n), n, p, max(centre - half, 0.0), min(centre + half, 1.0), confidence, method
    )


@dataclass(frozen=True)
class MeanEstimate:
    """A mean with its standard error and normal 95% (or `confidence`) interval.

    `mean` is `None` when no score is present; `se`, `low` and `high` are `None` when
    the standard error is undefined (one score, or one cluster when clustered).
    """

    mean: float | None
    se: float | None
    low: float | None
    high: float | None
    n: int
    clusters: int
    missing: int
    confidence: float
    method: str


def _present(
    scores: Sequence[float | None], items: Sequence[Hashable] | None
) -> tuple[np.ndarray, list[Hashable] | None]:
    """The scores that are neither None nor NaN, with their items."""
    if items is not None and len(items) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(items)} items")
    keep = [i for i, s in enumerate(scores) if s is not None and not math.isnan(s)]
    values = np.array([scores[i] for i in keep], dtype=float)
    return values, (None if items is None else [items[i] for i in keep])


def _clustered_variance(values: np.ndarray, items: list[Hashable]) -> float:
    """Miller (2024) eq. for the clustered variance of the mean (see `mean_se`). Inspect
    AI's clustered `stderr` differs: it scales (1/n^2) sum_c (sum_i (s_ic - m))^2 by
    C / (C - 1), so its numbers will not match these exactly."""
    n = len(values)
    deviations = values - values.mean()
    index: dict[Hashable, int] = {}
    codes = np.array([index.setdefault(item, len(index)) for item in items])
    cluster_sums = np.bincount(codes, weights=deviations)
    cross = float(np.sum(cluster_sums**2) - np.sum(deviations**2))  # sum over i != j
    naive = float(np.sum(deviations**2)) / (n - 1) / n
    return max(naive + cross / n**2, 0.0)


def mean_se(
    scores: Sequence[float | None],
    *,
    items: Sequence[Hashable] | None = None,
    confidence: float = 0.95,
) -> MeanEstimate:
    """The mean score with its standard error: naive, or clustered by item. Missing
    scores (None or NaN) are left out and counted in `missing`.

    Naive: SE = sqrt(sum((s_i - m)^2) / (n - 1) / n), the CLT standard error.

    Clustered (`items` given, one per score; repeats of an item are one cluster),
    Miller 2024, "Adding Error Bars to Evals: A Statistical Approach to Language Model
    Evaluations" (arXiv:2411.00640), section on clustered standard errors:

        SE_clustered = sqrt(SE_naive^2 + (1 / n^2) * sum_c sum_i sum_{j != i}
                                          (s_ic - m) (s_jc - m))

    With clusters of size one it equals the naive SE; with one cluster it is undefined
    (`None`). Inspect AI's clustered `stderr` differs (see `_clustered_variance`). The
    interval is mean +/- z * SE, z the normal quantile (1.96 for 95%).
    """
    z = _z(confidence)
    values, kept_items = _present(scores, items)
    n, missing = len(values), len(scores) - len(values)
    clusters = n if kept_items is None else len(set(kept_items))
    method = "naive (CLT)" if kept_items is None else "clustered by item (Miller 2024)"
    if n == 0:
        return MeanEstimate(None, None, None, None, 0, 0, missing, confidence, method)
    mean = float(values.mean())
    if n < 2 or clusters < 2:
        why = "one score" if n < 2 else "one cluster"
        undefined = f"{method}: SE undefined ({why})"
        return MeanEstimate(mean, None, None, None, n, clusters, missing, confidence, undefined)
    if kept_items is None:
        se = float(values.std(ddof=1)) / math.sqrt(n)
    else:
        se = math.sqrt(_clustered_variance(values, kept_items))
    low, high = mean - z * se, mean + z * se
    return MeanEstimate(mean, se, low, high, n, clusters, missing, confidence, method)


# -- two binary outcomes on the same units --------------------------------------------


@dataclass(frozen=True)
class PairedComparison:
    """A against B on the same units: rates, their difference with a CI, McNemar, h.

    `a_only` counts units A got right and B wrong, `b_only` the reverse (the
    discordant pairs); `difference` is `rate_a - rate_b`.
    """

    n: int
    dropped: int
    rate_a: float
    rate_b: float
    difference: float
    low: float
    high: float
    confidence: float
    ci_method: str
    a_only: int
    b_only: int
    statistic: float | None
    p_value: float
    test: str
    cohens_h: float | None
    """None for numeric outcomes (`compare_paired_means`): h is for proportions."""


def mcnemar(a_only: int, b_only: int) -> tuple[float | None, float, str]:
    """(statistic, p-value, the test used) for McNemar's test on the discordant counts.

    Fewer than 25 discordant pairs: the exact two-sided binomial test of a_only out of
    a_only + b_only at 1/2 (no statistic). Otherwise the chi-square with continuity
    correction, (|a_only - b_only| - 1)^2 / (a_only + b_only) on 1 df. No discordant
    pairs: p = 1.0, there is no evidence of a difference.
    """
    discordant = a_only + b_only
    if discordant == 0:
        return None, 1.0, "McNemar: no discordant pairs, p = 1.0"
    if discordant < EXACT_BELOW:
        p = float(sps.binomtest(a_only, discordant, 0.5).pvalue)
        rule = f"{discordant} discordant pairs < {EXACT_BELOW}"
        return None, min(p, 1.0), f"McNemar exact binomial ({rule})"
    statistic = (abs(a_only - b_only) - 1) ** 2 / discordant
    p = float(sps.chi2.sf(statistic, 1))
    rule = f"{discordant} discordant pairs >= {EXACT_BELOW}"
    return statistic, p, f"McNemar chi-square with continuity correction ({rule})"


def cohens_h(p_a: float, p_b: float) -> float:
    """Cohen's h = 2 asin(sqrt(p_a)) - 2 asin(sqrt(p_b)) (Cohen 1988, ch. 6)."""
    return 2 * math.asin(math.sqrt(p_a)) - 2 * math.asin(math.sqrt(p_b))


def _bootstrap_difference(
    differences: np.ndarray, confidence: float, resamples: int, seed: int
) -> tuple[float, float]:
    """Percentile CI of the mean paired difference, resampling pairs with replacement.

    Each pair's difference is -1, 0 or +1, so a resample of n pairs is fully described
    by how many of each it drew: multinomial counts with the observed shares. Drawing
    those counts is the same bootstrap as drawing indices, in O(resamples) not O(n).
    """
    n = len(differences)
    shares = np.array([np.sum(differences == v) for v in (-1, 0, 1)], dtype=float) / n
    counts = np.random.default_rng(seed).multinomial(n, shares / shares.sum(), resamples)
    means = (counts[:, 2] - counts[:, 0]) / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def _cluster_codes(clusters: Sequence[Hashable]) -> np.ndarray:
    index: dict[Hashable, int] = {}
    return np.array([index.setdefault(c, len(index)) for c in clusters], dtype=np.int64)


def _bootstrap_clusters(
    differences: np.ndarray, codes: np.ndarray, confidence: float, resamples: int, seed: int
) -> tuple[float, float]:
    """Percentile CI of the mean paired difference, resampling whole clusters (items)
    with replacement: each resample's estimate is sum of its clusters' difference sums
    over the sum of their pair counts (chunks keep about a million draws in memory)."""
    sums = np.bincount(codes, weights=differences)
    counts = np.bincount(codes).astype(float)
    m = len(sums)
    rng = np.random.default_rng(seed)
    chunk = max(1, 1_000_000 // m)
    means = []
    for start in range(0, resamples, chunk):
        draws = rng.integers(0, m, size=(min(chunk, resamples - start), m))
        means.append(sums[draws].sum(axis=1) / counts[draws].sum(axis=1))
    tail = (1 - confidence) / 2
    low, high = np.quantile(np.concatenate(means), [tail, 1 - tail])
    return float(low), float(high)


def clustered_mcnemar(
    a_only: np.ndarray, b_only: np.ndarray, codes: np.ndarray
) -> tuple[float | None, float, str]:
    """McNemar's test for pairs clustered in items (Durkalski, Palesch, Lipsitz & Rust
    2003, "Analysis of clustered matched-pair data", Stat Med 22:2417-2428):
    X^2 = (sum_c (b_c - c_c))^2 / sum_c (b_c - c_c)^2 on 1 df, b_c and c_c the cluster's
    discordant counts each way. No discordance at all: p = 1.0."""
    per_cluster = np.bincount(codes, weights=a_only.astype(float) - b_only.astype(float))
    clusters = len(per_cluster)
    denominator = float(np.sum(per_cluster**2))
    if denominator == 0:
        return None, 1.0, "clustered McNemar (Durkalski 2003): no discordant pairs, p = 1.0"
    statistic = float(np.sum(per_cluster)) ** 2 / denominator
    p = float(sps.chi2.sf(statistic, 1))
    return statistic, p, f"clustered McNemar (Durkalski 2003), chi-square, {clusters} items"


def compare_paired(
    a: Sequence[bool | None],
    b: Sequence[bool | None],
    *,
    clusters: Sequence[Hashable] | None = None,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two binary outcomes on the same units (a[i] and b[i] are one unit).

    Pairs with either side missing (None) are dropped and counted. The difference of
    rates gets a percentile CI from a paired bootstrap over units (`resamples` draws,
    numpy's default_rng(`seed`)); the test is McNemar's (see `mcnemar`). With `clusters`
    (one per unit: the item, when items repeat) and a cluster holding two pairs or more,
    the bootstrap resamples clusters and the test is `clustered_mcnemar`.
    Raises TrialrunError when no complete pair is left.
    """
    _z(confidence)
    if len(a) != len(b) or (clusters is not None and len(clusters) != len(a)):
        raise ValueError(f"paired outcomes must have one per unit: {len(a)} vs {len(b)}")
    keep = [i for i in range(len(a)) if a[i] is not None and b[i] is not None]
    if not keep:
        raise TrialrunError(f"no complete pairs to compare ({len(a)} units, all missing)")
    xs = np.array([a[i] for i in keep], dtype=int)
    ys = np.array([b[i] for i in keep], dtype=int)
    n = len(keep)
    a_only, b_only = int(np.sum(xs > ys)), int(np.sum(xs < ys))
    rate_a, rate_b = float(xs.mean()), float(ys.mean())
    codes = None if clusters is None else _cluster_codes([clusters[i] for i in keep])
    if codes is not None and int(codes.max()) + 1 < n:
        low, high = _bootstrap_clusters(xs - ys, codes, confidence, resamples, seed)
        ci_method = f"cluster bootstrap percentile, {resamples} resamples of items, seed {seed}"
        statistic, p, test = clustered_mcnemar(xs > ys, xs < ys, codes)
    else:
        low, high = _bootstrap_difference(xs - ys, confidence, resamples, seed)
        ci_method = f"paired bootstrap percentile, {resamples} resamples of units, seed {seed}"
        statistic, p, test = mcnemar(a_only, b_only)
    return PairedComparison(
        n=n, dropped=len(a) - n, rate_a=rate_a, rate_b=rate_b, difference=rate_a - rate_b,
        low=low, high=high, confidence=confidence, ci_method=ci_method,
        a_only=a_only, b_only=b_only, statistic=statistic, p_value=p, test=test,
        cohens_h=cohens_h(rate_a, rate_b),
    )  # fmt: skip


def _bootstrap_mean(
    differences: np.ndarray, confidence: float, resamples: int, seed: int
) -> tuple[float, float]:
    """Percentile CI of the mean of `differences`, resampling them with replacement (the
    indices drawn in chunks, so memory stays about 4 million indices at a time)."""
    n = len(differences)
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // n)
    means = []
    for start in range(0, resamples, chunk):
        draws = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        means.append(differences[draws].mean(axis=1))
    tail = (1 - confidence) / 2
    low, high = np.quantile(np.concatenate(means), [tail, 1 - tail])
    return float(low), float(high)


def compare_paired_means(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    confidence: float = 0.95,
    resamples: int = 2_000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two numeric outcomes on the same units (a[i] and b[i] are one unit).

    The test is the paired t-test (`scipy.stats.ttest_rel`, two-sided); the mean
    difference gets a percentile CI from a paired bootstrap over units (`resamples`
    draws, numpy's default_rng(`seed`)). `a_only`/`b_only` count the units where a is
    higher / b is higher; `cohens_h` is None. Pairs with a side missing are dropped and
    counted; raises TrialrunError when no complete pair is left.
    """
    _z(confidence)
    if len(a) != len(b):
        raise ValueError(f"paired outcomes must have one per unit: {len(a)} vs {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        raise TrialrunError(f"no complete pairs to compare ({len(a)} units, all missing)")
    xs = np.array([x for x, _ in pairs], dtype=float)
    ys = np.array([y for _, y in pairs], dtype=float)
    differences = xs - ys
    n = len(pairs)
    statistic: float | None = None
    p, test = 1.0, "paired t-test: every difference is equal, p = 1.0"
    if n > 1 and np.ptp(differences) > 0:
        result = sps.ttest_rel(xs, ys)
        statistic, p, test = float(result.statistic), float(result.pvalue), "paired t-test"
    elif n > 1 and differences[0] != 0:
        p, test = 0.0, "paired t-test: every difference is the same nonzero value, p = 0"
    low, high = _bootstrap_mean(differences, confidence, resamples, seed)
    ci_method = f"paired bootstrap percentile, {resamples} resamples of units, seed {seed}"
    return PairedComparison(
        n=n, dropped=len(a) - n, rate_a=float(xs.mean()), rate_b=float(ys.mean()),
        difference=float(differences.mean()), low=low, high=high, confidence=confidence,
        ci_method=ci_method, a_only=int(np.sum(differences > 0)),
        b_only=int(np.sum(differences < 0)), statistic=statistic, p_value=min(p, 1.0),
        test=test, cohens_h=None,
    )  # fmt: skip


# -- a family of p-values -----------------------------------------------------------


@dataclass(frozen=True)
class AdjustedPValues:
    """A family's p-values and their adjusted values, in the order given."""

    p_values: tuple[float, ...]
    adjusted: tuple[float, ...]
    method: str


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment: max over j <= i of (m - j) p_(j), capped at 1."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return out


def adjust_p_values(p_values: Sequence[float], *, method: AdjustMethod = "bh") -> AdjustedPValues:
    """Benjamini-Hochberg q-values (default) or Holm-adjusted p-values for a family.

    BH comes from `scipy.stats.false_discovery_control`; Holm is the step-down rule
    (Holm 1979). Either way each adjusted value is at least its p-value, at most 1, and
    monotone in p. An empty family gives empty tuples.
    """
    p = np.asarray(p_values, dtype=float)
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    if method not in ("bh", "holm"):
        raise ValueError(f"method must be 'bh' or 'holm', not {method!r}")
    if len(p) == 0:
        return AdjustedPValues((), (), method)
    if method == "bh":
        adjusted = np.asarray(sps.false_discovery_control(p, method="bh"), dtype=float)
        name = "Benjamini-Hochberg q-values"
    else:
        adjusted, name = _holm(p), "Holm step-down"
    adjusted = np.clip(np.maximum(adjusted, p), 0.0, 1.0)
    return AdjustedPValues(tuple(p.tolist()), tuple(adjusted.tolist()), name)


# -- agreement of two raters ----------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """Cohen's kappa between raters A and B, with the confusion table.

    `table[i][j]` counts units A labelled `labels[i]` and B labelled `labels[j]`.
    `kappa` (and its SE and interval) is `None` when chance agreement is 1, as when
    both raters give every unit the same single label.
    """

    kappa: float | None
    se: float | None
    low: float | None
    high: float | None
    percent_agreement: float
    n: int
    dropped: int
    labels: tuple[str, ...]
    table: tuple[tuple[int, ...], ...]
    confidence: float
    method: str


def _kappa_variance(probs: np.ndarray, kappa: float, n: int) -> float:
    """Fleiss, Cohen & Everitt (1969) large-sample variance of kappa (not under H0)."""
    rows, cols = probs.sum(axis=1), probs.sum(axis=0)
    chance = float(np.sum(rows * cols))
    term_a = np.sum(np.diag(probs) * (1 - (rows + cols) * (1 - kappa)) ** 2)
    off = probs * (cols[:, None] + rows[None, :]) ** 2
    np.fill_diagonal(off, 0.0)
    term_b = (1 - kappa) ** 2 * np.sum(off)
    term_c = (kappa - chance * (1 - kappa)) ** 2
    return max(float(term_a + term_b - term_c) / (1 - chance) ** 2 / n, 0.0)


def _confusion(pairs: list[tuple[str, str]]) -> tuple[tuple[str, ...], np.ndarray]:
    labels = tuple(sorted({label for pair in pairs for label in pair}))
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)), dtype=int)
    for x, y in pairs:
        table[index[x], index[y]] += 1
    return labels, table


def cohens_kappa(
    a: Sequence[str | None], b: Sequence[str | None], *, confidence: float = 0.95
) -> Agreement:
    """Cohen's kappa of two raters' categorical labels on the same units.

    kappa = (p_o - p_e) / (1 - p_e), p_o the observed agreement, p_e the agreement
    expected from the raters' marginal shares. Its SE is the asymptotic large-sample
    one of Fleiss, Cohen & Everitt (1969), the interval kappa +/- z * SE. Units with a
    missing label (None) are dropped and counted. Raises TrialrunError when none is left.
    """
    z = _z(confidence)
    if len(a) != len(b):
        raise ValueError(f"two raters must label the same units: {len(a)} vs {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        raise TrialrunError(f"no unit labelled by both raters ({len(a)} units)")
    labels, table = _confusion(pairs)
    n = len(pairs)
    probs = table / n
    observed = float(np.trace(probs))
    chance = float(np.sum(probs.sum(axis=1) * probs.sum(axis=0)))
    method = "Cohen's kappa, Fleiss-Cohen-Everitt (1969) asymptotic SE, normal CI"
    kappa = se = low = high = None
    if chance < 1:
        kappa = (observed - chance) / (1 - chance)
        se = math.sqrt(_kappa_variance(probs, kappa, n))
        low, high = kappa - z * se, kappa + z * se
    else:
        method = "Cohen's kappa: undefined, chance agreement is 1 (one label throughout)"
    rows = tuple(tuple(int(c) for c in row) for row in table)
    return Agreement(
        kappa=kappa, se=se, low=low, high=high, percent_agreement=observed, n=n,
        dropped=len(a) - n, labels=labels, table=rows, confidence=confidence, method=method,
    )  # fmt: skip
