"""Anthropic's wire format: the Messages API, errors, models, and Message Batches. A forced
tool (`tool_choice: {type: tool, name}`) is honoured: the mock's verdict for its input
schema comes back as a `tool_use` block (a refusal as a `refusal` stop, a verdict that is
not a JSON object as text)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from aiohttp import web

from trialrun.testing.batches import DAY_S, rfc3339
from trialrun.testing.wire import text
from trialrun.types import Request, Response

ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def parse(body: dict[str, Any], http: web.Request | None = None) -> Request:
    messages = [{"role": m["role"], "content": text(m["content"])} for m in body["messages"]]
    if body.get("system"):
        messages.insert(0, {"role": "system", "content": text(body["system"])})
    params: dict[str, Any] = {
        key: body[key] for key in ("temperature", "max_tokens") if key in body
    }
    request = Request(model=str(body["model"]), messages=messages, params=params)
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "tool":
        tools = {tool.get("name"): tool for tool in body.get("tools", [])}
        request.response_schema = tools[choice["name"]]["input_schema"]
        request.schema_name = str(choice["name"])
    return request


def render(request: Request, response: Response) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": response.text}]
    stop = "max_tokens" if response.finish_reason == "length" else "end_turn"
    if request.response_schema is not None:
        content, stop = _forced_tool_answer(request, response, stop)
    return {
        "id": f"msg_{response.request_id}",
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": response.usage.input, "output_tokens": response.usage.output},
    }


def _forced_tool_answer(
    request: Request, response: Response, stop: str
) -> tuple[list[dict[str, Any]], str]:
    """(content, stop_reason) of an answer to a forced tool: a `tool_use` block holding the
    verdict; a refusal, or a verdict that is no JSON object, as text."""
    if response.refusal is not None:
        return [{"type": "text", "text": response.refusal}], "refusal"
    try:
        verdict = json.loads(response.text)
    except ValueError:
        verdict = None
    if not isinstance(verdict, dict):
        return [{"type": "text", "text": response.text}], stop
    block_id = f"toolu_{response.request_id}"
    block = {"type": "tool_use", "id": block_id, "name": request.schema_name, "input": verdict}
    return [block], "max_tokens" if stop == "max_tokens" else "tool_use"


def batch_line(custom_id: str, result: str, status: int, answered: Any) -> dict[str, Any]:
    """A line of an Anthropic message batch's results."""
    body: dict[str, Any] = {"type": result}
    if result == "succeeded":
        body["message"] = answered
    elif result == "errored":
        error = {"type": ERRORS.get(status, "api_error"), "message": answered}
        body["error"] = {"type": "error", "error": error}
    return {"custom_id": custom_id, "result": body}


def batch_json(record: dict[str, Any], results_url: str) -> dict[str, Any]:
    """An Anthropic MessageBatch object."""
    created, ended = record["created"], record["ended_at"]
    tally = Counter((record["results"] or {}).values())
    if ended is not None:
        status = "ended"
    else:
        status = "canceling" if record["cancelling_at"] is not None else "in_progress"
    return {
        "id": record["id"],
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": len(record["requests"]) - sum(tally.values()),
            "succeeded": tally["succeeded"],
            "errored": tally["errored"],
            "canceled": tally["canceled"],
            "expired": tally["expired"],
        },
        "ended_at": rfc3339(ended),
        "created_at": rfc3339(created),
        "expires_at": rfc3339(created + DAY_S),
        "archived_at": None,
        "cancel_initiated_at": rfc3339(record["cancelling_at"]),
        "results_url": results_url if ended is not None else None,
    }


# -- as a process, for benchmarks ------------------------------------------------------------


def error(status: int, message: str) -> dict[str, Any]:
    """An error body as Anthropic sends it."""
    return {"type": "error", "error": {"type": ERRORS.get(status, "api_error"), "message": message}}


def models(names: tuple[str, ...]) -> dict[str, Any]:
    """The model list as `GET /v1/models` answers it."""
    return {
        "data": [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in names
        ],
        "has_more": False,
        "first_id": names[0],
        "last_id": names[-1],
    }


def given_key(http: web.Request) -> str:
    """The API key a request carries: x-api-key, or since SDK 2.x `Authorization: Bearer`."""
    headers = http.headers
    return headers.get("x-api-key", "") or headers.get("authorization", "").removeprefix("Bearer ")
