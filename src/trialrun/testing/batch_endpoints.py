"""The batch endpoints of the fake OpenAI (Files and Batch API), Anthropic (Message
Batches) and Gemini (batch jobs with inline requests, see `gemini_wire`, or from an
uploaded file, see `gemini_files`) servers: batches stored with each request's outcome
drawn at creation, ended by the first read after their delay (or a cancel), answered in
the provider's shapes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from trialrun.providers.mock import answer
from trialrun.testing import anthropic_wire, gemini_wire, openai_wire
from trialrun.testing.batches import (
    CUSTOM_ID,
    Rejected,
    cursor_index,
    json_object,
    new_id,
    page_after,
    page_limit,
    unique,
)
from trialrun.testing.faults import FORCED, BatchFaults
from trialrun.testing.gemini_files import GeminiFiles
from trialrun.testing.lifecycle import Handler
from trialrun.testing.wire import Wire


class BatchEndpoints(GeminiFiles):
    """Batches and files, on top of the answering endpoints."""

    batches: dict[str, dict[str, Any]]
    batch_delay_s: float
    batch_faults: BatchFaults
    on_batch_create: Callable[[dict[str, Any]], None] | None
    _files: dict[str, dict[str, Any]]
    _batch_serial: int

    def _batch_routes(self) -> list[tuple[str, str, Handler]]:
        guard = self._guarded
        if self.kind == "openai":
            return [
                ("POST", "/v1/files", guard(self._file_upload)),
                ("GET", "/v1/files/{file_id}", guard(self._file_get)),
                ("GET", "/v1/files/{file_id}/content", guard(self._file_content)),
                ("POST", "/v1/batches", guard(self._openai_batch_create)),
                ("GET", "/v1/batches", guard(self._batch_list)),
                ("GET", "/v1/batches/{batch_id}", guard(self._batch_get)),
                ("POST", "/v1/batches/{batch_id}/cancel", guard(self._batch_cancel)),
            ]
        if self.kind == "google":
            return [
                (
                    "POST",
                    "/{version}/models/{model}:batchGenerateContent",
                    guard(self._gemini_batch_create),
                ),
                ("GET", "/{version}/batches", guard(self._batch_list)),
                ("GET", "/{version}/batches/{batch_id}", guard(self._batch_get)),
                ("POST", "/{version}/batches/{batch_id}:cancel", guard(self._batch_cancel)),
                *self._gemini_file_routes(guard),
            ]
        return [
            ("POST", "/v1/messages/batches", guard(self._anthropic_batch_create)),
            ("GET", "/v1/messages/batches", guard(self._batch_list)),
            ("GET", "/v1/messages/batches/{batch_id}", guard(self._batch_get)),
            ("POST", "/v1/messages/batches/{batch_id}/cancel", guard(self._batch_cancel)),
            ("GET", "/v1/messages/batches/{batch_id}/results", guard(self._anthropic_results)),
        ]

    def _guarded(self, handle: Handler) -> Handler:
        """`handle` behind the API key check, its `Rejected` answered as a provider error."""

        async def guarded(http: web.Request) -> web.StreamResponse:
            refused = self._refuse(http)
            if refused is not None:
                return self._finish(http, None, "auth", refused)
            try:
                return await handle(http)
            except Rejected as exc:
                error = self._error(exc.status, exc.message)
                return self._finish(http, exc.body, f"status_{exc.status}", error)

        return guarded

    def _answer(self, http: web.Request, body: Any, data: dict[str, Any]) -> web.Response:
        """A batch endpoint's JSON answer, recorded."""
        self._note(http, body, "batch", data)
        return web.json_response(data)

    async def _file_upload(self, http: web.Request) -> web.StreamResponse:
        form = await http.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField) or not isinstance(purpose, str):
            raise Rejected(400, "a multipart form with the fields `file` and `purpose` is needed")
        content = upload.file.read()
        with self._lock:
            file = self._add_file(upload.filename, purpose, content)
        sent = {
            "purpose": purpose,
            "filename": upload.filename,
            "content": content.decode(errors="replace"),
        }
        return self._answer(http, sent, file)

    def _add_file(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        """Store a file (with the lock held) and return its File object."""
        file_id = new_id("file-")
        file: dict[str, Any] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        self._files[file_id] = {"file": file, "content": content}
        return file

    def _stored_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise Rejected(404, f"No such File object: {file_id}")
        return stored

    async def _file_get(self, http: web.Request) -> web.StreamResponse:
        return self._answer(http, None, self._stored_file(http.match_info["file_id"])["file"])

    async def _file_content(self, http: web.Request) -> web.StreamResponse:
        content = self._stored_file(http.match_info["file_id"])["content"]
        self._note(http, None, "batch")
        return web.Response(body=content, content_type="application/octet-stream")

    async def _openai_batch_create(self, http: web.Request) -> web.StreamResponse:
        body = await json_object(http)
        endpoint, metadata = body.get("endpoint"), body.get("metadata")
        if endpoint != "/v1/chat/completions":
            raise Rejected(400, f"endpoint {endpoint!r}: only /v1/chat/completions here", body)
        if body.get("completion_window") != "24h":
            raise Rejected(400, "completion_window must be '24h'", body)
        if metadata is not None and not isinstance(metadata, dict):
            raise Rejected(400, "metadata must be an object of strings", body)
        file_id = str(body.get("input_file_id"))
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise Rejected(400, f"Invalid 'input_file_id': {file_id!r}: no such file", body)
        try:
            lines = openai_wire.batch_lines(stored["content"], endpoint)
        except Rejected as exc:
            raise Rejected(exc.status, exc.message, body) from None
        models = sorted({str(line["body"].get("model")) for line in lines})
        if len(models) > 1:
            raise Rejected(400, f"a batch's requests must all use one model, not {models}", body)
        fields = {
            "input_file_id": file_id,
            "endpoint": endpoint,
            "metadata": metadata,
            "model": models[0],
            "output_file_id": None,
            "error_file_id": None,
        }
        return self._created(http, body, self._create_batch("batch_", lines, fields))

    async def _anthropic_batch_create(self, http: web.Request) -> web.StreamResponse:
        body = await json_object(http)
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise Rejected(400, "requests: a non-empty list is required", body)
        for number, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
                message = f"requests.{number}.custom_id: should match ^[a-zA-Z0-9_-]{{1,64}}$"
                raise Rejected(400, message, body)
            if not isinstance(item.get("params"), dict):
                raise Rejected(400, f"requests.{number}.params: an object is required", body)
        try:
            unique([item["custom_id"] for item in requests])
        except Rejected as exc:
            raise Rejected(exc.status, exc.message, body) from None
        return self._created(http, body, self._create_batch("msgbatch_", requests, {}))

    async def _gemini_batch_create(self, http: web.Request) -> web.StreamResponse:
        body = await json_object(http)
        batch = body.get("batch")
        if not isinstance(batch, dict):
            raise Rejected(400, "batch: an object is required", body)
        source = batch.get("inputConfig") or {}
        try:
            if "fileName" in source:
                requests = self._gemini_input(str(source["fileName"]))
            else:
                requests = _inlined_requests(source)
            unique([item["custom_id"] for item in requests])
        except Rejected as exc:
            raise Rejected(exc.status, exc.message, body) from None
        fields = {
            "model": f"models/{http.match_info['model']}",
            "display_name": str(batch.get("displayName") or ""),
            "input_file": source.get("fileName"),
            "responses_file": None,
        }
        return self._created(http, body, self._create_batch("batches/", requests, fields))

    def _create_batch(
        self, prefix: str, requests: list[dict[str, Any]], fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Store a new batch of `requests`, each with its outcome drawn; its JSON as created."""
        with self._lock:
            self._batch_serial += 1
            faults, serial = self.batch_faults, self._batch_serial
            record: dict[str, Any] = {
                "id": new_id(prefix),
                "created": time.time(),
                "requests": requests,
                "outcomes": {
                    item["custom_id"]: faults.pick(str(serial), item["custom_id"])
                    for item in requests
                },
                "cancelling_at": None,
                "ended_at": None,
                "read_at": None,
                "results": None,
                "lines": None,
                **fields,
            }
            self.batches[record["id"]] = record
            return self._batch_json(record, fresh=True)

    def _created(self, http: web.Request, body: Any, data: dict[str, Any]) -> web.Response:
        self._note(http, body, "batch_create", data)
        if self.on_batch_create is not None:
            self.on_batch_create(data)
        return web.json_response(data)

    def _read(self, batch_id: str) -> dict[str, Any]:
        """The stored batch `batch_id`, brought up to date (with the lock held)."""
        record = self.batches.get(batch_id) or self.batches.get(f"batches/{batch_id}")
        if record is None:
            raise Rejected(404, f"No batch found with id '{batch_id}'.")
        self._settle(record)
        return record

    async def _batch_get(self, http: web.Request) -> web.StreamResponse:
        with self._lock:
            data = self._batch_json(self._read(http.match_info["batch_id"]))
        return self._answer(http, None, data)

    async def _batch_list(self, http: web.Request) -> web.StreamResponse:
        query = http.query
        if self.kind == "google":
            return await self._gemini_list(http)
        limit = page_limit(query.get("limit"), most=100 if self.kind == "openai" else 1000)
        with self._lock:
            ids = list(reversed(self.batches))  # newest first
        if self.kind == "openai":
            start, stop = page_after(ids, query.get("after"), limit)
        elif "before_id" in query:
            stop = cursor_index(ids, query["before_id"])
            start = max(0, stop - limit)
        else:
            start, stop = page_after(ids, query.get("after_id"), limit)
        with self._lock:
            page = [self._batch_json(self._read(batch_id)) for batch_id in ids[start:stop]]
        data: dict[str, Any] = {
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start > 0 if "before_id" in query else stop < len(ids),
        }
        if self.kind == "openai":
            data = {"object": "list", **data}
        return self._answer(http, None, data)

    async def _gemini_list(self, http: web.Request) -> web.StreamResponse:
        """Batch jobs newest first, `pageSize` at a time; the page token is the last name."""
        limit = page_limit(http.query.get("pageSize"), most=1000)
        with self._lock:
            ids = list(reversed(self.batches))
            start, stop = page_after(ids, http.query.get("pageToken"), limit)
            page = [self._batch_json(self._read(batch_id)) for batch_id in ids[start:stop]]
        data: dict[str, Any] = {"operations": page}
        if stop < len(ids):
            data["nextPageToken"] = ids[stop - 1]
        return self._answer(http, None, data)

    async def _batch_cancel(self, http: web.Request) -> web.StreamResponse:
        with self._lock:
            record = self._read(http.match_info["batch_id"])
            ended = record["ended_at"] is not None
            if ended and self.kind == "openai" and record["status"] != "cancelled":
                status = record["status"]
                raise Rejected(409, f"Cannot cancel a batch with status '{status}'.")
            if not ended and record["cancelling_at"] is None:
                record["cancelling_at"] = time.time()
            data = self._batch_json(record) if self.kind != "google" else {}
        return self._answer(http, None, data)

    async def _anthropic_results(self, http: web.Request) -> web.StreamResponse:
        batch_id = http.match_info["batch_id"]
        with self._lock:
            lines = self._read(batch_id)["lines"]
        if lines is None:
            raise Rejected(404, f"Results of message batch {batch_id} are not ready: not ended.")
        self._note(http, None, "batch")
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return web.Response(body=content, content_type="application/binary")

    def _settle(self, record: dict[str, Any]) -> None:
        """End a batch (with the lock held) if it was cancelled or its delay has passed."""
        if record["ended_at"] is not None:
            return
        now = time.time()
        if record["cancelling_at"] is not None:
            self._end(record, now, canceled=True)
        elif now - record["created"] >= self.batch_delay_s:
            at = max(record["created"] + self.batch_delay_s, record["read_at"] or 0.0)
            self._end(record, at, canceled=False)
        else:
            record["read_at"] = now

    def _end(self, record: dict[str, Any], at: float, *, canceled: bool) -> None:
        """Answer every request of a batch (with the lock held) and mark the batch ended."""
        results: dict[str, str] = {}
        lines: list[dict[str, Any]] = []
        for item in record["requests"]:
            custom_id = item["custom_id"]
            outcome = "canceled" if canceled else record["outcomes"][custom_id]
            if self.kind == "openai":
                result, status, body = batch_answer(self.wire, item["body"], outcome)
                line = openai_wire.batch_line(record["id"], custom_id, result, status, body)
            elif self.kind == "google":
                request = {"model": record["model"], **item["request"]}  # a file's may omit it
                result, status, body = batch_answer(self.wire, request, outcome)
                line = None
                if result in ("succeeded", "errored"):
                    line = gemini_wire.inlined_response(custom_id, result, status, body)
                    if record["input_file"]:
                        line = gemini_wire.file_line(line)
            else:
                result, status, body = batch_answer(self.wire, item["params"], outcome)
                line = anthropic_wire.batch_line(custom_id, result, status, body)
            results[custom_id] = result
            if line is not None:
                lines.append(line)
        record.update(ended_at=at, results=results, lines=lines)
        if self.kind == "openai":
            self._openai_batch_files(record)
        elif self.kind == "google" and record["input_file"] and not canceled:
            self._gemini_results_file(record)

    def _openai_batch_files(self, record: dict[str, Any]) -> None:
        """The ended batch's output and error files, and its final status."""
        answered = [line for line in record["lines"] if openai_wire.line_ok(line)]
        failed = [line for line in record["lines"] if not openai_wire.line_ok(line)]
        for key, lines, name in (
            ("output_file_id", answered, "output"),
            ("error_file_id", failed, "error"),
        ):
            if lines:
                content = "".join(json.dumps(line) + "\n" for line in lines).encode()
                filename = f"{record['id']}_{name}.jsonl"
                record[key] = self._add_file(filename, "batch_output", content)["id"]
        results = record["results"].values()
        record["status"] = (
            "cancelled"
            if record["cancelling_at"] is not None
            else "expired"
            if "expired" in results
            else "completed"
        )

    def _batch_json(self, record: dict[str, Any], *, fresh: bool = False) -> dict[str, Any]:
        """The batch as its provider shows it; `fresh`: as just created."""
        if self.kind == "openai":
            return openai_wire.batch_json(record, fresh=fresh)
        if self.kind == "google":
            return gemini_wire.batch_json(record)
        results_url = f"http://127.0.0.1:{self.port}/v1/messages/batches/{record['id']}/results"
        return anthropic_wire.batch_json(record, results_url)


def _inlined_requests(source: dict[str, Any]) -> list[dict[str, Any]]:
    """A Gemini job's inline requests: each one's key and request."""
    inline = source.get("requests") or {}
    items = inline.get("requests") if isinstance(inline, dict) else None
    if not isinstance(items, list) or not items:
        raise Rejected(400, "batch.inputConfig: requests.requests (a non-empty list) or fileName")
    requests = []
    for number, item in enumerate(items):
        key = (item.get("metadata") or {}).get("key") if isinstance(item, dict) else None
        if not isinstance(key, str) or not isinstance(item.get("request"), dict):
            raise Rejected(400, f"requests[{number}]: a request and metadata.key are required")
        requests.append({"custom_id": key, "request": item["request"]})
    return requests


def batch_answer(wire: Wire, params: dict[str, Any], outcome: str) -> tuple[str, int, Any]:
    """What one request of a batch came to: (result type, HTTP status, answer or error text).

    The result type is Anthropic's: succeeded, errored, expired or canceled.
    """
    if outcome in ("expired", "canceled"):
        return outcome, 0, None
    if outcome == "error":
        return "errored", 500, "The server had an error while processing your request."
    forced = FORCED.search(json.dumps(params))
    if forced and int(forced.group(1)) >= 400:
        status = int(forced.group(1))
        return "errored", status, f"forced {status}"
    try:
        request = wire.parse(params, None)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return "errored", 400, f"bad request: {exc}"
    return "succeeded", 200, wire.render(request, answer(request))
