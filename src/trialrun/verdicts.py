"""Verdict schemas for LLM judges: the compact `schema:`, its wire forms, and checking replies.

A building block of issue 12's judges; nothing calls it yet (the judge stage that will is
built later). It imports only `errors`, so any layer may use it.

The compact form
----------------
A judge's config says what its verdict holds, one field a key::

    schema: {answer: [pass, fail], coherent: bool, reasoning: str,
             confidence: {type: float, min: 0, max: 1}, score: {type: int, min: 1, max: 5}}

A field is a list of at least two distinct strings (an enum; `{enum: [...]}` says the
same), `bool`, `str`, `int`, `float`, or `{type: int|float, min: N, max: N}` (either bound
may be left out). `VerdictSchema.parse` turns a mistake into a one-line `ConfigError` that
names the key (`judge.schema.score: ...`).

Wire forms
----------
- `json_schema()` is for OpenAI's strict structured outputs (`strict: true`). Assumed
  rules, from OpenAI's "Supported schemas" page: the root is an object, every property is
  listed in `required`, every object has `additionalProperties: false`, and only supported
  keywords appear; `minimum`/`maximum` on numbers are among them (they were not when strict
  mode launched in 2024; a server that still refuses them needs the bounds dropped, and
  `validate` checks them either way). The same dict is plain JSON Schema for other servers.
- `gemini_schema()` is Gemini's OpenAPI-3.0 subset (`responseSchema`): uppercase types,
  enums as `{type: STRING, format: enum, enum: [...]}`, `required`, `propertyOrdering` (so
  the model writes fields in the order given, e.g. reasoning before answer), `minimum` and
  `maximum`; no `additionalProperties`, which that subset lacks.

Checking replies
----------------
`parse_verdict(text, schema)` = `schema.validate(extract_json(text))`. `extract_json` is
tolerant about where the JSON sits (the whole reply, a fenced block, the first balanced
object in prose) for servers without structured output, and strict about what it is: a key
given twice does not parse. `validate` never guesses and never fills a default: every field
is required, extra keys are refused, "PASS" is not "pass", 5.0 is not an int and true is
not a number. Either raises `VerdictError`, whose message is the reason a judge leaves in
place of a verdict (DESIGN.md: "a judge that fails leaves a reason, never a verdict").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from trialrun.errors import ConfigError, TrialrunError

Kind = Literal["enum", "bool", "str", "int", "float"]
SCALARS: tuple[Kind, ...] = ("bool", "str", "int", "float")
_HOW = (
    "use one of bool, str, int, float, a list of choices such as [pass, fail], "
    "{type: int, min: 1, max: 5} or {enum: [...]}"
)
_MAPPING_KEYS = ("type", "min", "max", "enum")
_JSON_TYPES = {
    "enum": "string",
    "bool": "boolean",
    "str": "string",
    "int": "integer",
    "float": "number",
}
_FENCE = re.compile(r"```(?:json)?[ \t]*(?:\n|(?=[{\[]))(.*?)```", re.DOTALL | re.IGNORECASE)


class VerdictError(TrialrunError):
    """A judge's reply is not a verdict of its schema; the message says what is wrong."""


@dataclass(frozen=True)
class VerdictField:
    """One field of a verdict: its kind, an enum's choices, a number's bounds."""

    name: str
    kind: Kind
    choices: tuple[str, ...] = ()
    minimum: int | float | None = None
    maximum: int | float | None = None


# ---------------------------------------------------------------- the compact form


@dataclass(frozen=True)
class VerdictSchema:
    """The fields a verdict holds, in the order the config gives them."""

    fields: tuple[VerdictField, ...]

    @classmethod
    def parse(cls, spec: dict[str, Any], where: str) -> VerdictSchema:
        """The schema a config's `schema:` describes; `where` names the judge (`judge`)."""
        if not isinstance(spec, dict):
            raise ConfigError(
                f"{where}.schema: expected a mapping of field names to types, "
                f"such as {{answer: [pass, fail], reasoning: str}}, not {_short(spec)}"
            )
        if not spec:
            raise ConfigError(
                f"{where}.schema: is empty; give at least one field, "
                "such as {answer: [pass, fail], reasoning: str}"
            )
        return cls(tuple(_parse_field(name, kind, where) for name, kind in spec.items()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(field.name for field in self.fields)

    def json_schema(self) -> dict[str, Any]:
        """JSON Schema that OpenAI's strict structured outputs accept (see the module doc)."""
        return {
            "type": "object",
            "properties": {field.name: _json_property(field) for field in self.fields},
            "required": list(self.names),
            "additionalProperties": False,
        }

    def gemini_schema(self) -> dict[str, Any]:
        """The same in Gemini's OpenAPI subset (`responseSchema`; see the module doc)."""
        return {
            "type": "OBJECT",
            "properties": {field.name: _gemini_property(field) for field in self.fields},
            "required": list(self.names),
            "propertyOrdering": list(self.names),
        }

    def validate(self, value: Any) -> dict[str, Any]:
        """The verdict, fields in schema order, if `value` matches; else `VerdictError`.

        Every problem is named, joined by "; ". Ints are accepted (as floats) for float fields.
        """
        if not isinstance(value, dict):
            raise VerdictError(f"the reply is {_json_type(value)}, not a JSON object")
        problems = [f"missing field {name!r}" for name in self.names if name not in value]
        verdict: dict[str, Any] = {}
        for field in self.fields:
            if field.name in value:
                try:
                    verdict[field.name] = _check(field, value[field.name])
                except _Wrong as wrong:
                    problems.append(f"field {field.name!r}: {wrong}")
        extra = [key for key in value if key not in self.names]
        problems += [f"unexpected field {_short(key)}" for key in extra]
        if problems:
            raise VerdictError("; ".join(problems))
        return verdict


def _parse_field(name: Any, spec: Any, where: str) -> VerdictField:
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
        raise ConfigError(
            f"{where}.schema: {_short(name)} is not a field name; "
            "use letters, digits and _ (not first a digit), such as answer"
        )
    key = f"{where}.schema.{name}"
    if isinstance(spec, list):
        return VerdictField(name, "enum", choices=_parse_choices(spec, key))
    if isinstance(spec, dict):
        return _parse_mapping(name, spec, key)
    if spec in SCALARS:
        return VerdictField(name, spec)
    if isinstance(spec, str):
        raise ConfigError(f"{key}: unknown type {spec!r}; {_HOW}")
    if spec is None:
        raise ConfigError(f"{key}: no type given; {_HOW}")
    raise ConfigError(f"{key}: {_short(spec)} is not a type; {_HOW}")


def _parse_choices(values: Any, key: str) -> tuple[str, ...]:
    if not isinstance(values, list):
        raise ConfigError(f"{key}.enum: expected a list of strings, such as [pass, fail]")
    for value in values:
        if not isinstance(value, str):
            raise ConfigError(
                f"{key}: choice {_short(value)} is not a string; choices are strings "
                "(in YAML quote yes, no, on, off, true, false and numbers: 'yes'); "
                "for numbers use {type: int, min: N, max: N}"
            )
    twice = sorted({value for value in values if values.count(value) > 1})
    if twice:
        raise ConfigError(f"{key}: choice {twice[0]!r} is listed twice; list each once")
    if len(values) < 2:
        raise ConfigError(
            f"{key}: an enum needs at least two choices, such as [pass, fail], not {len(values)}"
        )
    return tuple(values)


def _parse_mapping(name: str, spec: dict[Any, Any], key: str) -> VerdictField:
    unknown = [item for item in spec if item not in _MAPPING_KEYS]
    if unknown:
        raise ConfigError(
            f"{key}: unknown key {_short(unknown[0])}; a field's mapping takes "
            "type, min and max ({type: int, min: 1, max: 5}) or enum ({enum: [pass, fail]})"
        )
    if "enum" in spec:
        if set(spec) - {"enum", "type"} or spec.get("type", "str") != "str":
            raise ConfigError(f"{key}: an enum takes no type, min or max; give {{enum: [...]}}")
        return VerdictField(name, "enum", choices=_parse_choices(spec["enum"], key))
    kind = spec.get("type")
    if kind not in SCALARS:
        what = "no type given" if kind is None else f"unknown type {_short(kind)}"
        raise ConfigError(f"{key}.type: {what}; use one of {', '.join(SCALARS)}")
    if kind in ("bool", "str") and ("min" in spec or "max" in spec):
        raise ConfigError(f"{key}: min and max are for int and float fields, not {kind}")
    low, high = (_parse_bound(spec, bound, kind, key) for bound in ("min", "max"))
    if low is not None and high is not None and low > high:
        raise ConfigError(f"{key}: min {low} is above max {high}; give min <= max")
    return VerdictField(name, kind, minimum=low, maximum=high)


def _parse_bound(spec: dict[Any, Any], bound: str, kind: str, key: str) -> int | float | None:
    value = spec.get(bound)
    if value is None:
        return None
    if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(
            f"{key}.{bound}: expected a whole number for an int field, not {_short(value)}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key}.{bound}: expected a number, not {_short(value)}")
    return value


# ---------------------------------------------------------------- wire forms


def _json_property(field: VerdictField) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": _JSON_TYPES[field.kind]}
    if field.kind == "enum":
        prop["enum"] = list(field.choices)
    prop.update(_bounds(field))
    return prop


def _gemini_property(field: VerdictField) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": _JSON_TYPES[field.kind].upper()}
    if field.kind == "enum":
        prop.update({"format": "enum", "enum": list(field.choices)})
    prop.update(_bounds(field))
    return prop


def _bounds(field: VerdictField) -> dict[str, int | float]:
    bounds = {"minimum": field.minimum, "maximum": field.maximum}
    return {name: value for name, value in bounds.items() if value is not None}


# ---------------------------------------------------------------- checking a verdict


class _Wrong(Exception):
    """What is wrong with one field's value (the field's name is added by the caller)."""


def _check(field: VerdictField, value: Any) -> Any:
    if field.kind == "enum":
        if not isinstance(value, str) or value not in field.choices:
            raise _Wrong(f"{_short(value)} is not one of {', '.join(field.choices)}")
        return value
    if field.kind == "bool":
        if not isinstance(value, bool):
            raise _Wrong(f"{_short(value)} is not true or false")
        return value
    if field.kind == "str":
        if not isinstance(value, str):
            raise _Wrong(f"{_short(value)} is not a string")
        return value
    return _check_number(field, value)


def _check_number(field: VerdictField, value: Any) -> int | float:
    if field.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise _Wrong(f"{_short(value)} is not an integer")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Wrong(f"{_short(value)} is not a number")
    if not math.isfinite(value):
        raise _Wrong(f"{_short(value)} is not a finite number")
    if field.minimum is not None and value < field.minimum:
        raise _Wrong(f"{_short(value)} is below the minimum {field.minimum}")
    if field.maximum is not None and value > field.maximum:
        raise _Wrong(f"{_short(value)} is above the maximum {field.maximum}")
    return float(value) if field.kind == "float" else value


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return _short(value)
    return "a number" if isinstance(value, int | float) else type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    """A value as a user's one-line message shows it: 'text', 7, true, null, [1, 2]."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool) or value is None or isinstance(value, list | dict):
        text = json.dumps(value, ensure_ascii=False, default=repr)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- finding the JSON


class _Duplicate(ValueError):
    """A JSON object gives a key twice: which value was meant is a guess, so it is refused."""


def extract_json(text: str) -> Any:
    """The JSON in a judge's reply: the whole text, a ```json block, or the first {...}.

    Raises `VerdictError("no JSON object in the reply")`, or "the reply's JSON does not
    parse: ..." with the first parse error when something JSON-like was found but none
    of it parses (a truncated reply, a trailing comma, a key given twice).
    """
    errors: list[str] = []
    for candidate in _candidates(text.strip()):
        try:
            return json.loads(candidate, object_pairs_hook=_no_duplicates)
        except (json.JSONDecodeError, _Duplicate) as exc:
            errors.append(str(exc))
    if errors:
        raise VerdictError(f"the reply's JSON does not parse: {errors[0]}")
    raise VerdictError("no JSON object in the reply")


def parse_verdict(text: str, schema: VerdictSchema) -> dict[str, Any]:
    """The verdict in a judge's reply, or `VerdictError`; never guesses, never fills a default."""
    return schema.validate(extract_json(text))


def _candidates(text: str) -> Iterator[str]:
    """Texts that may be the reply's JSON, most likely first."""
    if text.startswith("{"):
        yield text
    elif text:
        try:
            json.loads(text)
        except json.JSONDecodeError:
            pass
        else:  # an array, string, number or literal: validate says it is not an object
            yield text
    for match in _FENCE.finditer(text):
        yield match.group(1)
    yield from _objects(text)


def _objects(text: str) -> Iterator[str]:
    """Each balanced {...} in `text`, left to right, never one inside another; then an unclosed tail."""
    start = text.find("{")
    while start != -1:
        end = _closing_brace(text, start)
        if end is None:  # truncated: the parse error says where it stops
            yield text[start:]
            return
        yield text[start : end + 1]
        start = text.find("{", end + 1)


def _closing_brace(text: str, start: int) -> int | None:
    """The index of the brace that closes the one at `start`, skipping braces in strings."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _Duplicate(f"key {key!r} is given twice")
        found[key] = value
    return found
