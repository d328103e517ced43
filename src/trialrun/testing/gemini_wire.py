"""Gemini's wire format: generateContent, errors and models. A `responseSchema` is
honoured: the mock's verdict for it is the candidate's text (a refusal a SAFETY stop)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from trialrun.testing.wire import text
from trialrun.types import Request, Response


def camel(config: dict[str, Any], snake: str) -> Any:
    head, *rest = snake.split("_")
    camel = head + "".join(part.title() for part in rest)
    return config.get(camel, config.get(snake))


def parse(body: dict[str, Any], http: web.Request) -> Request:
    messages = [
        {
            "role": "assistant" if turn.get("role") == "model" else "user",
            "content": text(turn.get("parts", [])),
        }
        for turn in body["contents"]
    ]
    system = camel(body, "system_instruction")
    if system:
        messages.insert(0, {"role": "system", "content": text(system.get("parts", []))})
    config = camel(body, "generation_config") or {}
    params: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("seed", "seed"),
        ("max_tokens", "max_output_tokens"),
    ):
        value = camel(config, theirs)
        if value is not None:
            params[ours] = value
    if camel(config, "response_logprobs"):
        params["top_logprobs"] = int(camel(config, "logprobs") or 1)
    model = http.match_info["model"]
    request = Request(model=model, messages=messages, params=params)
    schema = camel(config, "response_schema")
    if schema is not None:
        request.response_schema = schema
    return request


def render(request: Request, response: Response) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [{"text": response.text}]},
        "finishReason": "MAX_TOKENS" if response.finish_reason == "length" else "STOP",
        "index": 0,
    }
    if response.refusal is not None:  # Gemini blocks rather than refuses: no content
        candidate = {"finishReason": "SAFETY", "index": 0}
    if response.logprobs is not None:
        candidate["logprobsResult"] = {
            "chosenCandidates": [
                {"token": e["token"], "logProbability": e["logprob"]} for e in response.logprobs
            ],
            "topCandidates": [
                {
                    "candidates": [
                        {"token": t["token"], "logProbability": t["logprob"]} for t in e["top"]
                    ]
                }
                for e in response.logprobs
            ],
        }
    return {
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": response.usage.input,
            "candidatesTokenCount": response.usage.output,
            "totalTokenCount": response.usage.total,
        },
        "modelVersion": request.model,
        "responseId": str(response.request_id),
    }


# -- batch wire formats ----------------------------------------------------------------------


_STATES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


def error(status: int, message: str) -> dict[str, Any]:
    """An error body as the Gemini API sends it."""
    return {
        "error": {"code": status, "message": message, "status": _STATES.get(status, "INTERNAL")}
    }


def models(names: tuple[str, ...]) -> dict[str, Any]:
    """The model list as `GET /{version}/models` answers it."""
    return {
        "models": [
            {
                "name": f"models/{m}",
                "displayName": m,
                "supportedGenerationMethods": ["generateContent"],
            }
            for m in names
        ]
    }


def given_key(http: web.Request) -> str:
    """The API key a request carries (header or `?key=`)."""
    return http.headers.get("x-goog-api-key", "") or http.query.get("key", "")
