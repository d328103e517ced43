"""Power, precision and the budget frontier: how many units an experiment needs.

Pure functions over scipy (no distribution written by hand), beside `trialrun.stats`.
A *unit* is one item × repeat run in every compared cell, so a paired comparison of two
models on N units is N pairs.

    mcnemar_power         power of McNemar's test for a paired difference at N
    mcnemar_sample_size   N for a paired difference at a given power
    mcnemar_mde           the smallest paired difference detectable at N
    wilson_half_width     half the width of a rate's Wilson interval at N
    paired_half_width     half the width of a paired difference's normal interval at N
    frontier              budget -> N -> half-widths -> detectable difference
    variance_components   between-item and within-item variance from a pilot with repeats
    optimal_repeats       repeats per item that buy the narrowest CI for a budget

The McNemar formulas are Connor (1987), "Sample size for testing differences in
proportions for the paired-sample design", Biometrics 43:207-211 (after Miettinen 1968):
with psi the discordant-pair fraction (p10 + p01) and delta the difference (p10 - p01),

    N = (z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trialrun.stats import LazyModule

sps: Any = LazyModule("scipy.stats")
optimize: Any = LazyModule("scipy.optimize")


def _z(p: float) -> float:
    return float(sps.norm.ppf(p))


def _check(discordance: float, effect: float | None = None) -> None:
    if not 0 < discordance <= 1:
        raise ValueError(f"the discordant fraction must be in (0, 1], not {discordance}")
    if effect is not None and not 0 < abs(effect) <= discordance:
        raise ValueError(
            f"a paired difference of {effect} needs a discordant fraction of at least "
            f"|{effect}| (got {discordance}): the difference is p10 - p01, both within it"
        )


def mcnemar_power(n: float, discordance: float, effect: float, *, alpha: float = 0.05) -> float:
    """Power of the two-sided McNemar test at `n` pairs (Connor 1987, normal approximation):
    Phi((|delta| sqrt(n) - z_{1-alpha/2} sqrt(psi)) / sqrt(psi - delta^2))."""
    _check(discordance, effect)
    spread = math.sqrt(max(discordance - effect**2, 1e-300))
    signal = abs(effect) * math.sqrt(n) - _z(1 - alpha / 2) * math.sqrt(discordance)
    return float(sps.norm.cdf(signal / spread))


def mcnemar_sample_size(
    discordance: float, effect: float, *, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Pairs needed to detect `effect` (p10 - p01) with McNemar's test (Connor 1987)."""
    _check(discordance, effect)
    top = _z(1 - alpha / 2) * math.sqrt(discordance)
    top += _z(power) * math.sqrt(discordance - effect**2)
    return math.ceil((top / abs(effect)) ** 2)


def mcnemar_mde(
    n: int, discordance: float, *, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """The smallest |p10 - p01| detectable at `n` pairs with the given power (solving
    `mcnemar_power` for delta with brentq); None when even delta = psi is not enough."""
    _check(discordance)

    def gap(delta: float) -> float:
        return mcnemar_power(n, discordance, delta, alpha=alpha) - power

    if gap(discordance) < 0:
        return None
    return float(optimize.brentq(gap, 1e-9, discordance, xtol=1e-10))


def wilson_half_width(rate: float, n: float, *, confidence: float = 0.95) -> float:
    """Half the width of the Wilson score interval for a rate at `n` trials:
    z sqrt(p(1-p)/n + z^2/(4n^2)) / (1 + z^2/n) (Wilson 1927)."""
    if not 0 <= rate <= 1 or n <= 0:
        raise ValueError(f"need a rate in [0, 1] and n > 0, got {rate} and {n}")
    z = _z(0.5 + confidence / 2)
    return z * math.sqrt(rate * (1 - rate) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)


def paired_half_width(
    n: float, discordance: float, effect: float = 0.0, *, confidence: float = 0.95
) -> float:
    """Half the width of the normal interval of a paired difference of rates at `n`
    pairs: z sqrt((psi - delta^2) / n), the variance of the mean of p10/p01 indicators."""
    _check(discordance)
    return _z(0.5 + confidence / 2) * math.sqrt(max(discordance - effect**2, 0.0) / n)


# -- the budget frontier --------------------------------------------------------------


@dataclass(frozen=True)
class FrontierRow:
    """What a budget buys: units, a rate's CI half-width, the paired difference's
    half-width and the smallest difference detectable at the power asked for."""

    budget: float
    n: int
    rate_half_width: float | None
    diff_half_width: float | None
    detectable: float | None


def frontier(
    budgets: Sequence[float],
    cost_per_unit: float,
    *,
    rate: float,
    discordance: float | None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> list[FrontierRow]:
    """For each budget: N = floor(budget / cost_per_unit) units, then the half-widths and
    the detectable difference at N (None where N is 0 or no discordance is known)."""
    if cost_per_unit <= 0:
        raise ValueError(f"the cost per unit must be positive, not {cost_per_unit}")
    rows = []
    for budget in budgets:
        n = math.floor(budget / cost_per_unit + 1e-9)
        known = n > 0 and discordance is not None
        rows.append(
            FrontierRow(
                budget=budget,
                n=n,
                rate_half_width=wilson_half_width(rate, n) if n > 0 else None,
                diff_half_width=paired_half_width(n, discordance) if known else None,  # type: ignore[arg-type]
                detectable=mcnemar_mde(n, discordance, alpha=alpha, power=power) if known else None,  # type: ignore[arg-type]
            )
        )
    return rows


# -- two-stage sampling: items, and repeats per item ---------------------------------


@dataclass(frozen=True)
class VarianceComponents:
    """One-way random-effects ANOVA of a score on items (balanced or not)."""

    between: float
    """sigma_b^2: the variance of the items' true means."""
    within: float
    """sigma_w^2: the variance of repeats around their item's mean."""
    items: int
    repeats: float
    """The mean number of repeats per item (k-bar)."""

    @property
    def icc(self) -> float:
        """rho = sigma_b^2 / (sigma_b^2 + sigma_w^2), the intraclass correlation."""
        total = self.between + self.within
        return self.between / total if total > 0 else 0.0

    def design_effect(self, k: float) -> float:
        """1 + (k - 1) rho (Kish 1965): how much k repeats of an item inflate the variance
        of the mean over k independent items."""
        return 1 + (k - 1) * self.icc


def variance_components(values: Sequence[float], items: Sequence[Hashable]) -> VarianceComponents:
    """sigma_b^2 and sigma_w^2 by the ANOVA (method of moments) estimators:
    MSW = sum (y_ij - ybar_i)^2 / (N - m); MSB = sum k_i (ybar_i - ybar)^2 / (m - 1);
    sigma_w^2 = MSW; sigma_b^2 = max((MSB - MSW) / k0, 0), k0 = (N - sum k_i^2 / N) / (m - 1)
    (Searle, Casella & McCulloch 1992, ch. 3; k0 = k when balanced)."""
    y = np.asarray(values, dtype=float)
    index: dict[Hashable, int] = {}
    codes = np.array([index.setdefault(item, len(index)) for item in items])
    m, n = len(index), len(y)
    if m < 2 or n <= m:
        raise ValueError("variance components need two items or more, and some repeated")
    sizes = np.bincount(codes, minlength=m).astype(float)
    means = np.bincount(codes, weights=y, minlength=m) / sizes
    msw = float(np.sum((y - means[codes]) ** 2)) / (n - m)
    msb = float(np.sum(sizes * (means - y.mean()) ** 2)) / (m - 1)
    k0 = (n - float(np.sum(sizes**2)) / n) / (m - 1)
    return VarianceComponents(max((msb - msw) / k0, 0.0), msw, m, n / m)


@dataclass(frozen=True)
class RepeatsPlan:
    """The repeats per item that minimise the CI half-width of the mean for a budget."""

    repeats: int
    items: int
    half_width: float | None
    unconstrained: float
    """k* before rounding: sqrt(c_item sigma_w^2 / (c_sample sigma_b^2)); inf when
    sigma_b^2 is 0 and items cost something."""


def optimal_repeats(
    components: VarianceComponents,
    budget: float,
    *,
    cost_sample: float,
    cost_item: float = 0.0,
    max_repeats: int = 100,
    confidence: float = 0.95,
) -> RepeatsPlan:
    """Two-stage sampling (Cochran 1977, Sampling Techniques, section 10.6): m items with k
    samples each cost m (c_item + k c_sample) and give Var(mean) = sigma_b^2/m +
    sigma_w^2/(m k). For a fixed budget the variance is least at
    k* = sqrt(c_item sigma_w^2 / (c_sample sigma_b^2)); the integers either side of k*
    (at least 1, at most `max_repeats`) are compared and the better one is returned.
    With c_item = 0 (every sample is a paid call and a new item costs nothing more),
    k* = 0, so one sample per item is best whenever items differ at all."""
    if cost_sample <= 0 or cost_item < 0:
        raise ValueError("need cost_sample > 0 and cost_item >= 0")
    sb, sw = components.between, components.within
    if sb > 0:
        k_star = math.sqrt(cost_item * sw / (cost_sample * sb))
    else:
        k_star = math.inf if cost_item > 0 else 0.0
    bounded = min(max(k_star, 1.0), float(max_repeats))
    candidates = {max(1, math.floor(bounded)), min(max_repeats, math.ceil(bounded))}
    z = _z(0.5 + confidence / 2)
    best: RepeatsPlan | None = None
    for k in sorted(candidates):
        m = math.floor(budget / (cost_item + k * cost_sample) + 1e-9)
        half = z * math.sqrt((sb + sw / k) / m) if m > 0 else None
        plan = RepeatsPlan(k, m, half, k_star)
        if best is None or (
            half is not None and (best.half_width is None or half < best.half_width)
        ):
            best = plan
    assert best is not None
    return best
