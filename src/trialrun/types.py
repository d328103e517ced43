"""Provider-neutral values that flow between the executor, providers and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass(slots=True)
class Request:
    """One model call, as every provider receives it."""

    model: str
    """The model's id at its provider (the part after `provider/`)."""
    messages: list[dict[str, str]]
    params: dict[str, Any]
    base_url: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    """Provider-specific settings from the model's config entry (never sent as params)."""
    response_schema: dict[str, Any] | None = None
    """A JSON Schema object the answer must match (type object, properties, required,
    additionalProperties false; string enums, booleans, strings, integers and numbers with
    minimum/maximum), sent through each provider's own structured-output mechanism; None
    (the default) sends none. The building block of LLM judges (issue 12): nothing in the
    executor sets it yet, and it is not yet part of the cache key."""
    schema_name: str = "verdict"
    """The schema's name where a provider wants one (OpenAI's json_schema, Anthropic's tool)."""


@dataclass(slots=True)
class Usage:
    input: int = 0
    output: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output

    def to_json(self) -> JSON:
        return {"input": self.input, "output": self.output, "total": self.total}


@dataclass(slots=True)
class Response:
    """What a provider answered; the executor fills `latency_s`, `attempts`, `cache_hit`."""

    text: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    logprobs: list[JSON] | None = None
    request_id: str | None = None
    served_model: str | None = None
    cost_usd: float | None = None
    latency_s: float = 0.0
    attempts: int = 1
    cache_hit: bool = False
    refusal: str | None = None
    """The model's refusal to answer a structured request (OpenAI's `message.refusal`,
    Anthropic's `refusal` stop); the text is then empty. In `to_json` only when set, so
    records and cache entries without one are unchanged."""

    def to_json(self) -> JSON:
        data: JSON = {
            "response": self.text,
            "usage": self.usage.to_json(),
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
            "latency_s": round(self.latency_s, 6),
            "attempts": self.attempts,
            "cache_hit": self.cache_hit,
            "cost_usd": self.cost_usd,
            "request_id": self.request_id,
            "served_model": self.served_model,
        }
        if self.refusal is not None:
            data["refusal"] = self.refusal
        return data

    @classmethod
    def from_json(cls, data: JSON) -> Response:
        usage = data.get("usage") or {}
        return cls(
            text=data["response"],
            usage=Usage(int(usage.get("input", 0)), int(usage.get("output", 0))),
            finish_reason=data.get("finish_reason"),
            logprobs=data.get("logprobs"),
            request_id=data.get("request_id"),
            served_model=data.get("served_model"),
            cost_usd=data.get("cost_usd"),
            latency_s=float(data.get("latency_s", 0.0)),
            attempts=int(data.get("attempts", 1)),
            cache_hit=bool(data.get("cache_hit", False)),
            refusal=data.get("refusal"),
        )


@dataclass(frozen=True, slots=True)
class Trial:
    """One planned trial: an item, a model, a grid cell and a repeat, with its id and seed."""

    seq: int
    trial_id: str
    item_id: str
    model: str
    """The model entry's label (its `name`, else `provider/model-id`)."""
    grid: dict[str, Any]
    repeat: int
    seed: int
