"""OpenAI's wire format: chat completions, errors, models, and the Batch API's files and
objects. A `response_format` of type json_schema is honoured: the mock's verdict for that
schema is the message content, or its `refusal`."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from typing import Any

from aiohttp import web

from trialrun.testing.batches import DAY_S, Rejected, stamp, unique
from trialrun.testing.wire import text
from trialrun.types import Request, Response


def parse(body: dict[str, Any], http: web.Request | None = None) -> Request:
    params: dict[str, Any] = {
        key: body[key]
        for key in ("temperature", "seed", "top_logprobs", "logprobs", "max_tokens")
        if key in body
    }
    if "max_completion_tokens" in body:
        params["max_tokens"] = body["max_completion_tokens"]
    messages = [{"role": m["role"], "content": text(m["content"])} for m in body["messages"]]
    request = Request(model=str(body["model"]), messages=messages, params=params)
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        json_schema = response_format["json_schema"]
        request.response_schema = json_schema["schema"]
        request.schema_name = str(json_schema.get("name", "verdict"))
    return request


def render(request: Request, response: Response) -> dict[str, Any]:
    logprobs = None
    if response.logprobs is not None:
        logprobs = {
            "content": [
                {
                    "token": entry["token"],
                    "logprob": entry["logprob"],
                    "bytes": list(entry["token"].encode()),
                    "top_logprobs": [
                        {"token": t["token"], "logprob": t["logprob"], "bytes": None}
                        for t in entry["top"]
                    ],
                }
                for entry in response.logprobs
            ]
        }
    return {
        "id": f"chatcmpl-{response.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": _message(response),
                "logprobs": logprobs,
                "finish_reason": response.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": response.usage.input,
            "completion_tokens": response.usage.output,
            "total_tokens": response.usage.total,
        },
    }


def _message(response: Response) -> dict[str, Any]:
    if response.refusal is not None:
        return {"role": "assistant", "content": None, "refusal": response.refusal}
    return {"role": "assistant", "content": response.text}


def batch_lines(content: bytes, endpoint: str) -> list[dict[str, Any]]:
    """The requests of an OpenAI batch input file (JSONL), checked as the API checks them."""
    lines: list[dict[str, Any]] = []
    for number, raw in enumerate(content.decode(errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            raise Rejected(400, f"line {number} of the input file is not JSON") from None
        if not (
            isinstance(line, dict)
            and isinstance(line.get("custom_id"), str)
            and isinstance(line.get("body"), dict)
        ):
            raise Rejected(400, f"line {number}: a custom_id string and a body object are needed")
        if line.get("method") != "POST" or line.get("url") != endpoint:
            raise Rejected(400, f"line {number}: method must be POST and url {endpoint}")
        lines.append(line)
    if not lines:
        raise Rejected(400, "the input file holds no requests")
    unique([line["custom_id"] for line in lines])
    return lines


def batch_line(
    batch_id: str, custom_id: str, result: str, status: int, answered: Any
) -> dict[str, Any] | None:
    """A line of an OpenAI batch's output or error file; None for a request never run."""
    if result == "canceled":
        return None
    digest = hashlib.sha256(f"{batch_id}:{custom_id}".encode()).hexdigest()[:24]
    line: dict[str, Any] = {"id": f"batch_req_{digest}", "custom_id": custom_id}
    if result == "expired":
        message = "This request could not be executed before the completion window expired."
        return {**line, "response": None, "error": {"code": "batch_expired", "message": message}}
    if result == "errored":
        kind = "server_error" if status >= 500 else "invalid_request_error"
        answered = {"error": {"message": answered, "type": kind, "param": None, "code": None}}
    response = {"status_code": status, "request_id": f"req_{digest}", "body": answered}
    return {**line, "response": response, "error": None}


def line_ok(line: dict[str, Any]) -> bool:
    """Whether a line of an OpenAI batch belongs in its output file (else: error file)."""
    return line["response"] is not None and line["response"]["status_code"] == 200


def batch_json(record: dict[str, Any], *, fresh: bool) -> dict[str, Any]:
    """An OpenAI Batch object; `fresh`: as just created, still validating."""
    created, ended = record["created"], record["ended_at"]
    tally = Counter((record["results"] or {}).values())
    if ended is not None:
        status = record["status"]
    elif fresh:
        status = "validating"
    else:
        status = "cancelling" if record["cancelling_at"] is not None else "in_progress"
    return {
        "id": record["id"],
        "object": "batch",
        "endpoint": record["endpoint"],
        "model": record["model"],
        "errors": None,
        "input_file_id": record["input_file_id"],
        "completion_window": "24h",
        "status": status,
        "output_file_id": record["output_file_id"],
        "error_file_id": record["error_file_id"],
        "created_at": int(created),
        "in_progress_at": None if fresh else int(created),
        "expires_at": int(created) + DAY_S,
        "finalizing_at": None,
        "completed_at": stamp(ended) if status == "completed" else None,
        "failed_at": None,
        "expired_at": stamp(ended) if status == "expired" else None,
        "cancelling_at": stamp(record["cancelling_at"]),
        "cancelled_at": stamp(ended) if status == "cancelled" else None,
        "request_counts": {
            "total": len(record["requests"]),
            "completed": tally["succeeded"],
            "failed": tally["errored"] + tally["expired"],
        },
        "metadata": record["metadata"],
    }


def error(status: int, message: str) -> dict[str, Any]:
    """An error body as OpenAI sends it."""
    return {"error": {"message": message, "type": "fake_error", "param": None, "code": None}}


def models(names: tuple[str, ...]) -> dict[str, Any]:
    """The model list as `GET /v1/models` answers it."""
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in names],
    }


def given_key(http: web.Request) -> str:
    """The API key a request carries."""
    return http.headers.get("authorization", "").removeprefix("Bearer ")
