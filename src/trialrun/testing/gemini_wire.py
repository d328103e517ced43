"""Gemini's wire format: generateContent, errors, models and batch jobs. A
`responseSchema` is honoured: the mock's verdict for it is the candidate's text (a refusal
a SAFETY stop).

Batch jobs follow google-genai 3.6's `batches` module (Gemini Developer API, "mldev"): the
create body is `{batch: {displayName, inputConfig: {requests: {requests: [{request,
metadata}]}}}}` (`_CreateBatchJobParameters_to_mldev`, `_InlinedRequest_to_mldev`); a job
is a long-running operation whose `metadata` holds `displayName`, `state` (`BATCH_STATE_*`,
which `t_job_state` renames `JOB_STATE_*`), `createTime`, `model` and, once ended,
`output.inlinedResponses.inlinedResponses: [{response | error, metadata}]`
(`_BatchJob_from_mldev`, `_InlinedResponse_from_mldev`), or for a job from an uploaded
file (`inputConfig: {fileName}`) `output.responsesFile`, the name of its results file
(`gemini_files`); a list is `{operations,
nextPageToken}` (`_ListBatchJobsResponse_from_mldev`). Per-request errors are
google.rpc.Status objects (`{code, message}`, gRPC codes). What an expired job's output
holds is not documented where we looked: this fake answers the requests it processed and
leaves out the expired ones (a cancelled job: none), which the provider must take either way."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from trialrun.testing.batches import rfc3339
from trialrun.testing.wire import text
from trialrun.types import Request, Response


def camel(config: dict[str, Any], snake: str) -> Any:
    head, *rest = snake.split("_")
    camel = head + "".join(part.title() for part in rest)
    return config.get(camel, config.get(snake))


def parse(body: dict[str, Any], http: web.Request | None) -> Request:
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
    model = http.match_info["model"] if http is not None else str(body["model"])
    model = model.removeprefix("models/")
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


# -- batch jobs ------------------------------------------------------------------------------

_GRPC = {400: 3, 401: 16, 403: 7, 404: 5, 429: 8, 503: 14}
"""The gRPC code (google.rpc.Code) of an HTTP status; INTERNAL (13) for the rest."""


def inlined_response(custom_id: str, result: str, status: int, answered: Any) -> dict[str, Any]:
    """One request's entry in a job's inline output: its answer or its error."""
    entry: dict[str, Any] = {"metadata": {"key": custom_id}}
    if result == "succeeded":
        entry["response"] = answered
    else:
        entry["error"] = {"code": _GRPC.get(status, 13), "message": str(answered)}
    return entry


def file_line(inlined: dict[str, Any]) -> dict[str, Any]:
    """A line of a job's results file: the inlined response's key at the top, beside its
    response or error."""
    line = {key: value for key, value in inlined.items() if key != "metadata"}
    return {"key": inlined["metadata"]["key"], **line}


def batch_state(record: dict[str, Any]) -> str:
    """A fake batch's state word on the wire."""
    if record["ended_at"] is None:
        return "BATCH_STATE_RUNNING" if record["read_at"] else "BATCH_STATE_PENDING"
    results = set(record["results"].values())
    if "canceled" in results:
        return "BATCH_STATE_CANCELLED"
    return "BATCH_STATE_EXPIRED" if "expired" in results else "BATCH_STATE_SUCCEEDED"


def batch_json(record: dict[str, Any]) -> dict[str, Any]:
    """A batch job as the API answers `batches.get` (an operation)."""
    state = batch_state(record)
    metadata: dict[str, Any] = {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
        "model": record["model"],
        "displayName": record["display_name"],
        "state": state,
        "createTime": rfc3339(record["created"]),
        "updateTime": rfc3339(record["ended_at"] or record["created"]),
        "batchStats": {"requestCount": str(len(record["requests"]))},
    }
    if record["ended_at"] is not None:
        metadata["endTime"] = rfc3339(record["ended_at"])
    if record["responses_file"]:
        metadata["output"] = {"responsesFile": record["responses_file"]}
    elif state in ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_EXPIRED"):
        metadata["output"] = {"inlinedResponses": {"inlinedResponses": record["lines"]}}
    return {"name": record["id"], "metadata": metadata, "done": record["ended_at"] is not None}


# -- errors and models -----------------------------------------------------------------------


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
