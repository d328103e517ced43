"""`anthropic/<model>`: Claude through the official `anthropic` SDK's Messages API.

System messages become the `system` parameter; `stop` becomes `stop_sequences`; stop
reasons map to the neutral finish reasons. Params the Messages API does not take (seed,
logprobs, penalties) are left out, since sending them would fail every call, and the run
warns once which ones.

API version 2026-10-21, which the SDK 2.x sends by default, takes no sampling params at
all: `temperature`, `top_p` and `top_k` (even `temperature: 1.0`) get a 400, and the SDK
dropped them from its signatures. So they are left out too, unless the model entry asks
for an older API version (`options: {anthropic_version: "2023-06-01"}`) for models and
servers that still take them; then they go in the request body as before.

A request with a `response_schema` (a judge's, issue 12; nothing in the executor sets it
yet) forces a tool whose input schema is the verdict: `tools: [{name, description,
input_schema}]` and `tool_choice: {type: tool, name}`, in batch entries too. The answer's
text is the canonical JSON of the first `tool_use` block's input and its `tool_use` stop
reads as "stop"; without one the text is empty and the finish reason tells why (a
`refusal` stop also fills `Response.refusal`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar

from trialrun.errors import ErrorKind
from trialrun.hashing import canonical
from trialrun.providers.batch import (
    BatchAPI,
    BatchOutcome,
    BatchStatus,
    read_chunks,
    read_jsonl,
    spool_download,
    spool_json_object,
)
from trialrun.providers.registry import provider
from trialrun.providers.sdk import SDKProvider
from trialrun.types import Request, Response, Usage

ENDPOINT_PATH = "/v1/messages"
_TAKEN = frozenset({"max_tokens", "stop_sequences", "metadata", "service_tier"})
_SAMPLING = frozenset({"temperature", "top_p", "top_k"})
SAMPLING_VERSION = "2023-06-01"
"""The last API version that takes sampling params."""
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
DEFAULT_MAX_TOKENS = 1024
_FINAL_ERRORS = frozenset(
    {"invalid_request_error", "not_found_error", "permission_error", "authentication_error"}
)


@provider("anthropic")
class AnthropicProvider(SDKProvider, BatchAPI):
    name: ClassVar[str] = "anthropic"
    env_keys: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY",)
    sdk: ClassVar[str] = "anthropic"
    extra: ClassVar[str] = "anthropic"

    def __init__(self, anthropic_version: str | None = None, **settings: Any) -> None:
        super().__init__(**settings)
        self.anthropic_version = anthropic_version
        # Older versions sort as strings ("2023-06-01" < "2026-10-21").
        self.sampling = anthropic_version is not None and anthropic_version <= SAMPLING_VERSION

    def client_class(self) -> Any:
        return self._sdk.AsyncAnthropic

    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"api_key": self.api_key}
        if self.base_url:
            options["base_url"] = self.base_url
        if self.anthropic_version:
            options["default_headers"] = {"anthropic-version": self.anthropic_version}
        return options

    def unsent_params(self, names: Iterable[str]) -> list[str]:
        taken = _TAKEN | _SAMPLING if self.sampling else _TAKEN
        return sorted(name for name in names if name not in taken and name != "stop")

    def params_note(self) -> str:
        if self.sampling:
            return ""
        return (
            f"the Messages API since version 2026-10-21 takes no temperature, top_p or top_k; "
            f"for a model that still does, set options: {{anthropic_version: '{SAMPLING_VERSION}'}}"
        )

    async def generate(self, request: Request) -> Response:
        # The sampling params, which the typed `messages.create` no longer takes, simply go
        # in the body when the API version takes them.
        body = to_messages_params(request, sampling=self.sampling)
        structured = request.response_schema is not None
        parse = functools.partial(_response, structured=structured)
        return await self.post(ENDPOINT_PATH, body, parse, "Messages API answer")

    # -- Message Batches -------------------------------------------------------------------

    # "A Message Batch is limited to either 100,000 Message requests or 256 MB in size,
    # whichever is reached first." https://docs.anthropic.com/en/docs/build-with-claude/batch-processing
    batch_limits = (100_000, 256 * 1024 * 1024)

    def batch_entry(self, custom_id: str, request: Request) -> dict[str, Any]:
        return {
            "custom_id": custom_id,
            "params": to_messages_params(request, sampling=self.sampling),
        }

    async def submit_batch(
        self, entries: Iterable[dict[str, Any]], metadata: dict[str, str]
    ) -> str:
        # The API takes a batch's requests in the body (up to 256 MB), which the SDK's
        # `batches.create` builds in memory; the same body, `{"requests": [...]}`, is written
        # to a temporary file an entry at a time and streamed from there.
        with spool_json_object("requests", entries) as body:
            size = body.seek(0, os.SEEK_END)
            body.seek(0)
            batch = await self._ensure_client().post(
                "/v1/messages/batches",
                cast_to=self._sdk.types.messages.MessageBatch,
                content=read_chunks(body),
                options={
                    "headers": {"Content-Type": "application/json", "Content-Length": str(size)}
                },
            )
        return str(batch.id)

    async def find_batch(
        self, metadata: dict[str, str], requests: int, created_after: float, known: set[str]
    ) -> str | None:
        # Message Batches carry no metadata: a batch of this size, created since the
        # submission began and not yet known to the run, is the one it lost.
        async for batch in self._ensure_client().messages.batches.list(limit=100):
            if batch.created_at.timestamp() < created_after:
                return None
            counts = batch.request_counts
            total = (
                counts.processing
                + counts.succeeded
                + counts.errored
                + counts.canceled
                + counts.expired
            )
            if batch.id not in known and total == requests:
                return str(batch.id)
        return None

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        batch = await self._ensure_client().messages.batches.retrieve(batch_id)
        counts = batch.request_counts.model_dump()
        note = None
        if counts.get("expired"):
            note = f"expired with {counts['expired']} requests unprocessed"
        elif counts.get("canceled"):
            note = f"cancelled with {counts['canceled']} requests unprocessed"
        return BatchStatus(
            batch.processing_status == "ended", str(batch.processing_status), counts, note
        )

    async def batch_results(self, batch_id: str) -> AsyncIterator[BatchOutcome]:
        results = self._ensure_client().messages.batches.with_streaming_response.results(batch_id)
        with await spool_download(results) as spool:
            for line in read_jsonl(spool):
                yield _outcome(line)

    async def cancel_batch(self, batch_id: str) -> None:
        await self._ensure_client().messages.batches.cancel(batch_id)


def _outcome(line: dict[str, Any]) -> BatchOutcome:
    """One line of a Message Batch's results file, as the API sends it."""
    custom_id, result = str(line["custom_id"]), line["result"]
    if result["type"] == "succeeded":
        return BatchOutcome(custom_id, response=_response(result["message"]))
    if result["type"] == "errored":
        error = (result.get("error") or {}).get("error") or {}
        kind: ErrorKind = "final" if error.get("type") in _FINAL_ERRORS else "retryable"
        message = f"{error.get('type', 'api_error')}: {error.get('message', 'no reason given')}"
        return BatchOutcome(custom_id, error=message, kind=kind)
    return BatchOutcome(custom_id, unprocessed=True)  # expired or canceled before it ran


def to_messages_params(request: Request, *, sampling: bool = False) -> dict[str, Any]:
    """The Messages API body for a neutral request (also used to build batch requests)."""
    system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
    params = dict(request.params)
    if "stop" in params:
        stop = params.pop("stop")
        params["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    taken = _TAKEN | _SAMPLING if sampling else _TAKEN
    body: dict[str, Any] = {k: v for k, v in params.items() if k in taken}
    body.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    body["model"] = request.model
    body["messages"] = [m for m in request.messages if m["role"] != "system"]
    if system:
        body["system"] = system
    if request.response_schema is not None:
        body.update(forced_tool(request.schema_name, request.response_schema))
    return body


def forced_tool(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The Messages API's structured output: one tool taking `schema`, and its use forced."""
    tool = {"name": name, "description": "Record the verdict.", "input_schema": schema}
    return {"tools": [tool], "tool_choice": {"type": "tool", "name": name}}


def _response(message: dict[str, Any], structured: bool | None = None) -> Response:
    """A Message's JSON (as the API sends it) as a neutral response.

    `structured`: the request forced a tool, so the text is its input's canonical JSON;
    None (batch results, whose requests are not at hand) decides by a `tool_use` block."""
    blocks = message["content"]
    text = "".join(block["text"] for block in blocks if block.get("type") == "text")
    tool_uses = [block for block in blocks if block.get("type") == "tool_use"]
    if structured is None:
        structured = bool(tool_uses)
    stop = message.get("stop_reason")
    refusal = None
    if structured:
        refusal = (text or "refused") if stop == "refusal" else None
        text = canonical(tool_uses[0]["input"]) if tool_uses else ""
        stop = "end_turn" if stop == "tool_use" else stop  # the forced tool is the answer
    usage = message.get("usage") or {}
    return Response(
        text=text,
        usage=Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)),
        finish_reason=_FINISH.get(stop, stop) if stop else None,
        request_id=message.get("id"),
        served_model=message.get("model"),
        refusal=refusal,
    )
