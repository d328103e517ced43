"""What `trialrun stats` measures: a metric read off each record, or counted as missing.

    correct                      a score by name (bools: a rate; numbers: a mean)
    judge.answer=pass            the primary judge's field equals a value (a rate)
    judge.coherent               a bool field (a rate) or a number field (a mean)
    judges.strict.answer=pass    the same for a named judge

A record gives no value (it is *missing*) when its trial failed, the score is null (its
reason is in `score_errors`), or the judge left no verdict (a judge error). Missing values
are counted, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from trialrun.config import Experiment, JudgeConfig
from trialrun.errors import UsageError
from trialrun.verdicts import VerdictField, VerdictSchema

Kind = Literal["binary", "numeric", "auto"]
"""`auto`: a score, binary while every value is a bool, numeric once one is a number."""


@dataclass(frozen=True)
class Metric:
    """A metric as named on the command line, and how to read it off a record."""

    text: str
    source: Literal["score", "judge"]
    name: str
    """The score's name, or the judge's (`judge` for the primary one)."""
    field: str | None
    """The verdict's field (judges only)."""
    expected: Any | None
    """`judge.F=VALUE`: the value that counts as a success (None: the field itself)."""
    kind: Kind
    primary: bool = False
    """`judge.F`: read `record["judge"]`, the first judge's verdict."""

    def value(self, record: dict[str, Any]) -> bool | float | None:
        """The record's value: a bool, a number, or None when missing."""
        if record.get("status") != "done":
            return None
        if self.source == "score":
            return _number_or_bool((record.get("scores") or {}).get(self.name))
        if self.primary:
            verdict = record.get("judge")
        else:
            verdict = (record.get("judges") or {}).get(self.name)
        if not isinstance(verdict, dict) or self.field not in verdict:
            return None
        found = verdict[self.field]
        if self.expected is None:
            return _number_or_bool(found)
        if isinstance(self.expected, float) and not isinstance(found, bool):
            return isinstance(found, int | float) and float(found) == self.expected
        return bool(found == self.expected)


def _number_or_bool(value: Any) -> bool | float | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return None


def default_metric(experiment: Experiment) -> str:
    """The first score, else the first judge field that gives a rate or a mean."""
    if experiment.scores:
        return next(iter(experiment.scores))
    for metric in _judge_metrics(experiment):
        return metric
    raise UsageError(
        "this run has no scores and no judges, so there is nothing to count; add a score "
        "(trialrun score RUN 'scores.correct.equals={{ item.answer }}')"
    )


def available(experiment: Experiment) -> list[str]:
    """Every metric the run offers, as they are written on the command line."""
    return [*experiment.scores, *_judge_metrics(experiment)]


def _judge_metrics(experiment: Experiment) -> list[str]:
    out = []
    for index, judge in enumerate(experiment.judges()):
        prefix = "judge" if index == 0 else f"judges.{judge.label}"
        for field in _schema(judge).fields:
            if field.kind == "enum":
                out.append(f"{prefix}.{field.name}={field.choices[0]}")
            elif field.kind != "str":
                out.append(f"{prefix}.{field.name}")
    return out


def _schema(judge: JudgeConfig) -> VerdictSchema:
    return VerdictSchema.parse(judge.schema_, judge.label)


def parse_metric(text: str | None, experiment: Experiment) -> Metric:
    """The metric `text` names (the default one when None); UsageError naming those that
    exist when it names none."""
    text = text or default_metric(experiment)
    path, has_value, raw = text.partition("=")
    if not has_value and path in experiment.scores:
        return Metric(text, "score", path, None, None, "auto")
    head, _, rest = path.partition(".")
    judges = experiment.judges()
    judge, field_name = None, rest
    if head == "judge" and judges:
        judge = judges[0]
    elif head == "judges":
        name, _, field_name = rest.partition(".")
        judge = next((j for j in judges if j.label == name), None)
    field = _field(judge, field_name) if judge is not None else None
    if judge is None or field is None:
        raise UsageError(f"no metric '{text}' in this run; {_offered(experiment)}")
    primary = head == "judge"
    name = judge.label
    if has_value:
        return Metric(
            text, "judge", name, field.name, _expected(field, raw, text), "binary", primary
        )
    if field.kind in ("enum", "str"):
        example = f"={field.choices[0]}" if field.choices else "=VALUE"
        raise UsageError(
            f"metric '{text}' is a {'choice' if field.choices else 'text'} field; name the "
            "value that counts as a "
            f"success, e.g. {path}{example}"
        )
    kind: Kind = "binary" if field.kind == "bool" else "numeric"
    return Metric(text, "judge", name, field.name, None, kind, primary)


def _field(judge: JudgeConfig, name: str) -> VerdictField | None:
    return next((f for f in _schema(judge).fields if f.name == name), None)


def _expected(field: VerdictField, raw: str, text: str) -> Any:
    """VALUE of `judge.F=VALUE` as the field's type: true/false, a number, or a choice."""
    if field.kind == "bool":
        if raw.lower() not in ("true", "false"):
            raise UsageError(f"metric '{text}': {field.name} is a bool; write =true or =false")
        return raw.lower() == "true"
    if field.kind in ("int", "float"):
        try:
            return float(raw)
        except ValueError:
            raise UsageError(f"metric '{text}': {field.name} is a number, not '{raw}'") from None
    if field.kind == "enum" and raw not in field.choices:
        choices = ", ".join(field.choices)
        raise UsageError(f"metric '{text}': {field.name} is one of {choices}, not '{raw}'")
    return raw


def _offered(experiment: Experiment) -> str:
    found = available(experiment)
    if not found:
        return "it has no scores and no judges"
    return "metrics here: " + ", ".join(found)
