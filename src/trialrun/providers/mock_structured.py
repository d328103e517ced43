"""The mock's answer to a structured request (one with a `response_schema`): a verdict
that matches the schema, as canonical JSON text, the same on every run and machine.

Each field is decided by a hash of the model, the messages, the seed and the field's
path: an enum value or a boolean picked by it, a short phrase for a string, a value
within [minimum, maximum] for a number (a whole one for "integer"); nested objects and
arrays (of one item) are filled the same way. Types may be JSON Schema's ("object") or
Gemini's ("OBJECT"), since the fake Gemini server hands on the schema it was sent.

Prompt markers make the answers a judge must cope with:

- `[[mock:verdict-invalid]]`: JSON that violates the schema (an enum value not in its list);
- `[[mock:verdict-garbage]]`: text that is not JSON;
- `[[mock:verdict-refuse]]`: a refusal (`Response.refusal` set, the text empty);
- `[[mock:verdict-truncate]]`: the JSON cut off half-way, with finish_reason "length".

`[[mock:verdict-invalid-once]]` and `[[mock:verdict-garbage-once]]` act on a first ask
only (a request with no assistant message): a judge that asks again gets a valid verdict.

A `max_tokens` below the verdict's length (about four characters a token) cuts it off too.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from trialrun.hashing import canonical
from trialrun.types import Request, Response, Usage

MARKERS = ("invalid", "garbage", "refuse", "truncate")
REFUSAL = "I can't help with grading this answer."
GARBAGE = "The answer looks right to me, though I would rather not put it in JSON."
_PHRASES = [
    "The answer matches the reference.",
    "The answer is partly supported.",
    "The reasoning skips a step.",
    "The answer contradicts the source.",
    "The answer is concise and correct.",
    "The answer hedges without committing.",
]
_CHARS_PER_TOKEN = 4


def structured_answer(request: Request) -> Response:
    """The deterministic answer to a request with a `response_schema`."""
    schema = request.response_schema or {}
    key = canonical(["verdict", request.model, request.messages, request.params.get("seed")])
    verdict = schema_value(schema, key)
    marker = _marker(request)
    text, finish, refusal = canonical(verdict), "stop", None
    if marker == "refuse":
        text, refusal = "", REFUSAL
    elif marker == "garbage":
        text = GARBAGE
    elif marker == "invalid":
        text = canonical(violating(verdict, schema))
    elif marker == "truncate":
        text, finish = text[: len(text) // 2], "length"
    limit = request.params.get("max_tokens")
    if limit is not None and _tokens(text) > int(limit):
        text, finish = text[: int(limit) * _CHARS_PER_TOKEN], "length"
    digest = hashlib.sha256(key.encode()).hexdigest()
    return Response(
        text=text,
        usage=Usage(
            input=sum(len(m["content"].split()) + 4 for m in request.messages),
            output=_tokens(text or refusal or ""),
        ),
        finish_reason=finish,
        request_id=f"mock-{digest[:16]}",
        served_model=request.model,
        cost_usd=0.0,
        refusal=refusal,
    )


def _marker(request: Request) -> str | None:
    first_ask = not any(m["role"] == "assistant" for m in request.messages)
    for marker in MARKERS:
        if any(f"[[mock:verdict-{marker}]]" in m["content"] for m in request.messages):
            return marker
        once = f"[[mock:verdict-{marker}-once]]"
        if first_ask and any(once in m["content"] for m in request.messages):
            return marker
    return None


def _tokens(text: str) -> int:
    return math.ceil(len(text) / _CHARS_PER_TOKEN)


def _unit(text: str) -> float:
    """A stable number in [0, 1) from a string."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:13], 16) / float(1 << 52)


def _type(schema: dict[str, Any]) -> str:
    """The schema's type in lower case (the first that is not null, of a list)."""
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "string")
    return str(kind).lower()


def schema_value(schema: dict[str, Any], key: str) -> Any:
    """A value matching `schema`, decided by `key` (each field by `key/field`)."""
    roll = _unit(key)
    kind = _type(schema)
    if "enum" in schema:
        choices = list(schema["enum"])
        return choices[int(roll * len(choices))]
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: schema_value(sub, f"{key}/{name}") for name, sub in properties.items()}
    if kind == "array":
        return [schema_value(schema.get("items") or {}, f"{key}/0")]
    if kind == "boolean":
        return roll < 0.5
    if kind == "integer":
        low = math.ceil(float(schema.get("minimum", 0)))
        high = math.floor(float(schema.get("maximum", low + 10)))
        return low + int(roll * (high - low + 1))
    if kind == "number":
        floor = float(schema.get("minimum", 0.0))
        ceiling = float(schema.get("maximum", floor + 1.0))
        return min(max(round(floor + roll * (ceiling - floor), 3), floor), ceiling)
    return _PHRASES[int(roll * len(_PHRASES))]


def violating(verdict: Any, schema: dict[str, Any]) -> Any:
    """`verdict` made to violate `schema`: its first enum field gets a value outside the list,
    else its first field a list (no verdict field's type), else it becomes a list."""
    properties = schema.get("properties") or {}
    if not isinstance(verdict, dict) or not properties:
        return [verdict]
    broken = dict(verdict)
    for name, sub in properties.items():
        if "enum" in sub:
            broken[name] = _outside([str(choice) for choice in sub["enum"]])
            return broken
    broken[next(iter(properties))] = []
    return broken


def _outside(choices: list[str]) -> str:
    value = "not-in-enum"
    while value in choices:
        value += "!"
    return value
