"""Agreement between raters, and how far a judge's rate is off the humans'.

Raters: each coder, `adjudicated`, and each judge as `judge:NAME` (its verdicts in the
records' `judges[NAME]`, or `judge` for a run with a single judge). Each field of the
sheets' schema that holds categories (an enum, a bool, an int) is compared on the trials
both raters labelled: n, percent agreement, Cohen's kappa with its 95% CI
(`trialrun.stats.cohens_kappa`: Fleiss, Cohen & Everitt 1969 large-sample SE), and the
confusion table (rows: the first rater, columns: the second; labels in schema order).

For a binary field (a bool, or an enum of two values) each judge is also scored against
each human rater taken as the truth. The positive class is the first enum value (or true).
Sensitivity = P(judge positive | human positive), specificity = P(judge negative | human
negative); the judged rate is the share of positives among all the run's trials the judge
gave that field, and the Rogan-Gladen (1978) corrected rate is

    (judged_rate + specificity - 1) / (sensitivity + specificity - 1), clipped to [0, 1],

undefined when sensitivity + specificity <= 1 (a judge no better than chance). Its CI is a
seeded percentile bootstrap: the labelled pairs are resampled (for sensitivity and
specificity) and, independently, the judged trials (for the judged rate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np

from trialrun.annotation.sheets import ADJUDICATED, COMPARED_KINDS, common_schema
from trialrun.errors import TrialrunError, UsageError
from trialrun.runs import Run
from trialrun.stats import cohens_kappa
from trialrun.verdicts import VerdictField, VerdictSchema

JUDGE_PREFIX = "judge:"
Labels = dict[str, dict[str, Any]]
"""A rater's labels: trial id -> {field: value}."""


@dataclass(frozen=True, slots=True)
class PairAgreement:
    """Two raters on one field, over the trials both labelled."""

    field: str
    a: str
    b: str
    n: int
    percent_agreement: float
    kappa: float | None
    kappa_se: float | None
    kappa_low: float | None
    kappa_high: float | None
    confidence: float
    method: str
    labels: list[str]
    table: list[list[int]]
    """table[i][j]: trials `a` labelled labels[i] and `b` labelled labels[j]."""


@dataclass(frozen=True, slots=True)
class JudgeAccuracy:
    """A judge against a human rater on a binary field, and its error-corrected rate."""

    field: str
    judge: str
    reference: str
    positive: str
    n: int
    true_positive: int
    false_negative: int
    false_positive: int
    true_negative: int
    sensitivity: float | None
    specificity: float | None
    judged_n: int
    judged_rate: float | None
    corrected_rate: float | None
    corrected_low: float | None
    corrected_high: float | None
    ci_method: str


@dataclass(frozen=True, slots=True)
class AgreementReport:
    """Every pair of raters on every compared field, and each judge against the humans."""

    run_id: str
    raters: dict[str, int]
    """Each rater and how many trials it labelled."""
    fields: list[dict[str, Any]]
    pairs: list[PairAgreement]
    judges: list[JudgeAccuracy]
    skipped_fields: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def agreement(
    run: Run, *, field: str | None = None, seed: int = 0, resamples: int = 2000
) -> AgreementReport:
    """Agreement of every pair of raters of `run` (see the module doc)."""
    with run.store() as store:
        sheets, annotations = store.sheets(), store.annotations()
    spec = common_schema(sheets, "the run's sheets")
    schema = VerdictSchema.parse(spec, "schema")
    raters: dict[str, Labels] = {}
    for a in annotations:
        raters.setdefault(a.coder, {})[a.trial_id] = a.labels
    raters = dict(sorted(raters.items(), key=lambda kv: (kv[0] == ADJUDICATED, kv[0])))
    raters.update(judge_labels(run))
    compared, skipped = _fields(schema, field)
    pairs = [
        found
        for f in compared
        for a, b in combinations(raters, 2)
        if (found := compare(f, a, raters[a], b, raters[b])) is not None
    ]
    judges = [
        accuracy(f, j, raters[j], h, raters[h], seed=seed, resamples=resamples)
        for f in compared
        if binary_positive(f) is not None
        for j in raters
        if j.startswith(JUDGE_PREFIX)
        for h in raters
        if not h.startswith(JUDGE_PREFIX)
    ]
    return AgreementReport(
        run.run_id,
        {name: len(labels) for name, labels in raters.items()},
        [{"name": f.name, "kind": f.kind, "labels": categories(f, []),
          "positive": binary_positive(f)} for f in compared],
        pairs,
        [j for j in judges if j.n > 0],
        skipped,
    )  # fmt: skip


def _fields(schema: VerdictSchema, name: str | None) -> tuple[list[VerdictField], list[str]]:
    if name is not None and name not in schema.names:
        raise UsageError(
            f"--field: no field {name!r} in the sheets' schema ({', '.join(schema.names)})"
        )
    chosen = [f for f in schema.fields if name is None or f.name == name]
    compared = [f for f in chosen if f.kind in COMPARED_KINDS]
    if not compared:
        raise UsageError(f"--field {name}: a {chosen[0].kind} field holds no categories to compare")
    return compared, [f.name for f in chosen if f.kind not in COMPARED_KINDS]


def judge_labels(run: Run) -> dict[str, Labels]:
    """`judge:NAME` -> its verdicts by trial, from the done records."""
    judges = [j.label for j in run.experiment().judges()]
    found: dict[str, Labels] = {}
    for record in run.records():
        if record.get("status") != "done":
            continue
        verdicts = record.get("judges")
        if not verdicts and record.get("judge") and judges:
            verdicts = {judges[0]: record["judge"]}
        for name, verdict in (verdicts or {}).items():
            if isinstance(verdict, dict):
                found.setdefault(JUDGE_PREFIX + name, {})[record["trial_id"]] = verdict
    return found


# ---------------------------------------------------------------- a pair of raters


def category(value: Any) -> str | None:
    """A label as a category name: true/false for bools, the value's text otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def categories(field: VerdictField, seen: Sequence[str]) -> list[str]:
    """A field's categories in schema order: enum values, true/false, or the ints (the
    range when it is small and bounded, else those seen)."""
    if field.kind == "enum":
        base = list(field.choices)
    elif field.kind == "bool":
        base = ["true", "false"]
    elif (
        field.minimum is not None
        and field.maximum is not None
        and field.maximum - field.minimum <= 20
    ):
        base = [str(v) for v in range(int(field.minimum), int(field.maximum) + 1)]
    else:
        base = []
    extra = sorted({s for s in seen if s not in base}, key=lambda s: (len(s), s))
    return base + extra


def compare(
    field: VerdictField, a: str, labels_a: Labels, b: str, labels_b: Labels
) -> PairAgreement | None:
    """Two raters on one field over the trials both labelled; None when there are none."""
    common = [t for t in labels_a if t in labels_b]
    xs = [category(labels_a[t].get(field.name)) for t in common]
    ys = [category(labels_b[t].get(field.name)) for t in common]
    try:
        result = cohens_kappa(xs, ys)
    except TrialrunError:
        return None
    names = categories(field, [v for v in xs + ys if v is not None])
    index = {name: i for i, name in enumerate(names)}
    table = [[0] * len(names) for _ in names]
    for x, y in zip(xs, ys, strict=True):
        if x is not None and y is not None:
            table[index[x]][index[y]] += 1
    return PairAgreement(
        field=field.name, a=a, b=b, n=result.n, percent_agreement=result.percent_agreement,
        kappa=result.kappa, kappa_se=result.se, kappa_low=result.low, kappa_high=result.high,
        confidence=result.confidence, method=result.method, labels=names, table=table,
    )  # fmt: skip


# ---------------------------------------------------------------- a judge against humans


def binary_positive(field: VerdictField) -> str | None:
    """The positive class of a binary field (the first enum value, or true); else None."""
    if field.kind == "bool":
        return "true"
    if field.kind == "enum" and len(field.choices) == 2:
        return field.choices[0]
    return None


def rogan_gladen(judged_rate: float, sensitivity: float, specificity: float) -> float | None:
    """(p + spec - 1) / (sens + spec - 1) clipped to [0, 1]; None if sens + spec <= 1."""
    youden = sensitivity + specificity - 1
    if youden <= 0:
        return None
    return min(1.0, max(0.0, (judged_rate + specificity - 1) / youden))


def accuracy(
    field: VerdictField,
    judge: str,
    judged: Labels,
    reference: str,
    truth: Labels,
    *,
    seed: int,
    resamples: int,
) -> JudgeAccuracy:
    """`judge` against `reference` on a binary field (see the module doc)."""
    positive = binary_positive(field) or ""
    verdicts = [category(v.get(field.name)) for v in judged.values()]
    verdicts = [v for v in verdicts if v is not None]
    rate = sum(v == positive for v in verdicts) / len(verdicts) if verdicts else None
    pairs = [
        (
            category(truth[t].get(field.name)) == positive,
            category(judged[t].get(field.name)) == positive,
        )
        for t in truth
        if t in judged
        and category(truth[t].get(field.name)) is not None
        and category(judged[t].get(field.name)) is not None
    ]
    human = np.array([h for h, _ in pairs], dtype=bool)
    said = np.array([j for _, j in pairs], dtype=bool)
    tp, fn = int(np.sum(human & said)), int(np.sum(human & ~said))
    fp, tn = int(np.sum(~human & said)), int(np.sum(~human & ~said))
    sens = tp / (tp + fn) if tp + fn else None
    spec = tn / (tn + fp) if tn + fp else None
    corrected = None
    if rate is not None and sens is not None and spec is not None:
        corrected = rogan_gladen(rate, sens, spec)
    low, high = _bootstrap(human, said, len(verdicts), rate, seed, resamples)
    method = (
        f"percentile bootstrap, {resamples} resamples of the {len(pairs)} labelled pairs and "
        f"of the {len(verdicts)} judged trials, seed {seed}"
    )
    return JudgeAccuracy(
        field=field.name, judge=judge, reference=reference, positive=positive, n=len(pairs),
        true_positive=tp, false_negative=fn, false_positive=fp, true_negative=tn,
        sensitivity=sens, specificity=spec, judged_n=len(verdicts), judged_rate=rate,
        corrected_rate=corrected, corrected_low=low, corrected_high=high, ci_method=method,
    )  # fmt: skip


def _bootstrap(
    human: np.ndarray,
    said: np.ndarray,
    judged_n: int,
    rate: float | None,
    seed: int,
    resamples: int,
) -> tuple[float | None, float | None]:
    """Percentile CI of the corrected rate; None when under half the resamples define it."""
    n = len(human)
    if n == 0 or rate is None or judged_n == 0:
        return None, None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    h, s = human[picks], said[picks]
    positives, negatives = h.sum(axis=1), (~h).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = (h & s).sum(axis=1) / positives
        spec = (~h & ~s).sum(axis=1) / negatives
        rates = rng.binomial(judged_n, rate, size=resamples) / judged_n
        youden = sens + spec - 1
        corrected = np.clip((rates + spec - 1) / youden, 0.0, 1.0)
    defined = corrected[(positives > 0) & (negatives > 0) & (youden > 0)]
    if len(defined) < resamples / 2:
        return None, None
    low, high = np.quantile(defined, [0.025, 0.975])
    return float(low), float(high)
