"""Deterministic scorers: a value for each finished trial, computed without a model call.

`Scorers` is built once from the config's `scores:` (patterns compiled, templates parsed,
functions imported: a mistake is a `ConfigError` at load) and `score(record)` gives a
record its two fields:

- `scores`: `{name: value}`, a value being true/false, a number, or null;
- `score_errors`: `{name: reason}` for each null, and only for nulls.

A scorer that cannot decide (a failed trial, a missing turn, no option or number in the
response, no logprobs, a function that raised) gives null with its reason, never false:
trialrun never turns an error into a verdict.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from trialrun.config import Experiment, ScorerConfig
from trialrun.errors import ConfigError, TrialrunError
from trialrun.templates import Template
from trialrun.user_code import import_function

Value = bool | float | int | None
Scored = tuple[dict[str, Value], dict[str, str]]
"""(`scores`, `score_errors`) as a record holds them."""

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_FLAGS = {"IGNORECASE": re.IGNORECASE, "MULTILINE": re.MULTILINE, "DOTALL": re.DOTALL}
TEMPLATE_NAMES = frozenset({"item", "grid", "model", "repeat", "seed"})


class Undecided(Exception):
    """A scorer cannot decide; its message is the reason the score is null."""


class Scorer:
    """One named scorer, compiled."""

    def __init__(self, name: str, spec: ScorerConfig, source: str, grid: set[str]) -> None:
        self.name, self.spec, self.kind = name, spec, spec.kind
        self.where = f"{source}: scores.{name}"
        self.templates: dict[str, Template] = {}
        for field in ("equals", "includes", "number", "target"):
            text = getattr(spec, field)
            if text is not None and field in (self.kind, "target"):
                self.templates[field] = self._template(field, text, grid)
        flags = sum(_FLAGS[flag] for flag in spec.flags)
        self.pattern = re.compile(spec.regex, flags) if spec.regex is not None else None
        self.function = _import(spec.function, self.where, source) if spec.function else None

    def _template(self, field: str, text: str, grid: set[str]) -> Template:
        template = Template(text, f"{self.where}.{field}")
        unknown = template.names - TEMPLATE_NAMES - grid
        if unknown:
            raise ConfigError(
                f"{template.where}: unknown name '{sorted(unknown)[0]}' (a scorer's template "
                "sees item.<field>, grid values, model, repeat, seed)"
            )
        return template

    def check_item(self, item: dict[str, Any], where: str) -> None:
        """Each template reads only fields `item` has (checked on the first item at load)."""
        for template in self.templates.values():
            template.check_fields(item, where)

    def score(self, record: dict[str, Any], context: dict[str, Any]) -> Value:
        """The score of a finished record; raises `Undecided` with the reason for a null."""
        if record["status"] != "done":
            raise Undecided("the trial failed")
        turn = self._turn(record)
        if self.function is not None:
            return _call(self.function, context["item"], record)
        measure: Callable[[dict[str, Any], dict[str, Any]], Value] = getattr(self, f"_{self.kind}")
        return measure(turn, context)

    def _turn(self, record: dict[str, Any]) -> dict[str, Any]:
        turns, wanted = record["turns"], self.spec.turn
        if wanted is None:
            if not turns:
                raise Undecided("the trial has no answered turn")
            return turns[-1]  # type: ignore[no-any-return]
        if wanted > len(turns):
            raise Undecided(f"no turn {wanted} (the trial answered {len(turns)})")
        return turns[wanted - 1]  # type: ignore[no-any-return]

    def _render(self, field: str, context: dict[str, Any]) -> str:
        try:
            return self.templates[field].render(context)
        except TrialrunError as exc:
            raise Undecided(str(exc)) from None

    def _regex(self, turn: dict[str, Any], context: dict[str, Any]) -> Value:
        assert self.pattern is not None
        return self.pattern.search(turn["response"]) is not None

    def _equals(self, turn: dict[str, Any], context: dict[str, Any]) -> Value:
        expected = self._normal(self._render("equals", context))
        return self._normal(turn["response"]) == expected

    def _includes(self, turn: dict[str, Any], context: dict[str, Any]) -> Value:
        expected = self._normal(self._render("includes", context))
        return expected in self._normal(turn["response"])

    def _normal(self, text: str) -> str:
        return normalise(text, self.spec.case, self.spec.whitespace, self.spec.punctuation)

    def _choice(self, turn: dict[str, Any], context: dict[str, Any]) -> Value:
        assert self.spec.choice is not None
        chosen = chosen_option(turn["response"], self.spec.choice)
        if chosen is None:
            raise Undecided(f"no option of {', '.join(self.spec.choice)} in the response")
        return chosen == self._render("target", context).strip()

    def _number(self, turn: dict[str, Any], context: dict[str, Any]) -> Value:
        found = last_number(turn["response"])
        if found is None:
            raise Undecided("no number in the response")
        text = self._render("number", context)
        expected = last_number(text)
        if expected is None:
            raise Undecided(f"the expected value {text!r} is not a number")
        if abs(found - expected) <= self.spec.tol:
            return True
        rel = self.spec.rel_tol
        return rel is not None and math.isclose(found, expected, rel_tol=rel)

    def _logprob(self, turn: dict[str, Any], context: dict[str, Any]) -> Value:
        assert self.spec.logprob is not None
        return option_probability(
            turn.get("logprobs"), self.spec.logprob, self._render("target", context).strip()
        )


class Scorers:
    """The config's scorers, compiled and ready to score records."""

    def __init__(self, experiment: Experiment, source: str, id_field: str) -> None:
        grid = set(experiment.grid)
        self.id_field = id_field
        self.scorers = [
            Scorer(name, spec, source, grid) for name, spec in experiment.scores.items()
        ]

    def __bool__(self) -> bool:
        return bool(self.scorers)

    def check_item(self, item: dict[str, Any], where: str) -> None:
        for scorer in self.scorers:
            scorer.check_item(item, where)

    def score(self, record: dict[str, Any]) -> Scored:
        """`scores` and `score_errors` of a record."""
        context = self._context(record)
        scores: dict[str, Value] = {}
        errors: dict[str, str] = {}
        for scorer in self.scorers:
            try:
                scores[scorer.name] = scorer.score(record, context)
            except Undecided as exc:
                scores[scorer.name], errors[scorer.name] = None, str(exc)
        return scores, errors

    def _context(self, record: dict[str, Any]) -> dict[str, Any]:
        item = {self.id_field: record["item_id"], **record["item"]}
        grid = record["grid"]
        return {
            "item": item,
            "grid": grid,
            **grid,
            "model": record["model"],
            "repeat": record["repeat"],
            "seed": record["seed"],
        }


# ------------------------------------------------------------------ the measures


def normalise(text: str, case: bool = True, whitespace: bool = True, punct: bool = True) -> str:
    """Whitespace runs to one space and stripped, then punctuation (Unicode category P)
    stripped at both ends (and the whitespace it uncovers), then case-folded; each step
    that is `False` is skipped."""
    if whitespace:
        text = " ".join(text.split())
    if punct:
        start, end = 0, len(text)
        while start < end and unicodedata.category(text[start]).startswith("P"):
            start += 1
        while end > start and unicodedata.category(text[end - 1]).startswith("P"):
            end -= 1
        text = text[start:end].strip() if whitespace else text[start:end]
    return text.casefold() if case else text


def chosen_option(text: str, options: list[str]) -> str | None:
    """The last option label in `text` with no letter or digit on either side."""
    labels = "|".join(re.escape(option) for option in sorted(options, key=len, reverse=True))
    found = re.findall(rf"(?<![^\W_])({labels})(?![^\W_])", text)
    return found[-1] if found else None


def last_number(text: str) -> float | None:
    """The last number in `text` (`-1,234.5` is -1234.5), or None."""
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def option_probability(
    logprobs: list[dict[str, Any]] | None, options: list[str], target: str
) -> float:
    """The target's share of the options' probability at the first position whose top
    logprobs hold any option."""
    if not logprobs:
        raise Undecided("no logprobs (ask for top_logprobs)")
    for position in logprobs:
        present: dict[str, float] = {}
        for alternative in position.get("top") or []:
            token = str(alternative["token"]).strip()
            if token in options and token not in present:
                present[token] = float(alternative["logprob"])
        if present:
            top = max(present.values())
            weights = {token: math.exp(lp - top) for token, lp in present.items()}
            return weights.get(target, 0.0) / sum(weights.values())
    raise Undecided(f"no option of {', '.join(options)} among the top logprobs")


# ------------------------------------------------------------------ user functions


def _import(path: str, where: str, source: str = "") -> Callable[..., Any]:
    """`package.module:fn`, importable from the current folder, the config's folder (a
    `scorers.py` beside the config) or anywhere on the Python path."""
    return import_function(path, f"{where}.function", source)


def _call(function: Callable[..., Any], item: dict[str, Any], record: dict[str, Any]) -> Value:
    try:
        value = function(item, record)
    except Exception as exc:  # a user's function failing on one record nulls that score only
        raise Undecided(f"the function raised {type(exc).__name__}: {exc}") from None
    if value is None:
        raise Undecided("the function returned None")
    if not isinstance(value, bool | int | float):
        raise Undecided(f"the function returned {type(value).__name__}, not a bool or number")
    return value
