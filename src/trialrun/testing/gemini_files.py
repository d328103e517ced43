"""The fake Gemini server's Files API, as google-genai 3.6 calls it for batch jobs from a
file: the resumable upload (`files.upload`: a `start` POST to `/upload/{version}/files`
with `X-Goog-Upload-*` headers and `{file: {display_name, mime_type, size_bytes}}`, whose
answer's `X-Goog-Upload-URL` header names the session; then POSTs of the bytes to that URL,
`X-Goog-Upload-Command: upload` with `X-Goog-Upload-Offset`, the last `upload, finalize`,
answered `X-Goog-Upload-Status: active`, and `final` with `{file: File}`), and the download
(`files.download`: `GET /{version}/files/{id}:download?alt=media`, the path the SDK builds
under a custom base URL; the service's own `/download/{version}/...` path is answered too).
The session URL carries no key, as the service's does not: the session id is the secret.

A job's input file holds lines `{"key": ..., "request": GenerateContentRequest}`; its
results file, lines `{"key": ..., "response": GenerateContentResponse}` or `{"key": ...,
"error": {code, message}}` ("each line is either a GenerateContentResponse or a status
object", https://ai.google.dev/gemini-api/docs/batch-api#input-file)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from trialrun.testing import gemini_wire
from trialrun.testing.batches import DAY_S, Rejected, new_id, rfc3339
from trialrun.testing.endpoints import Endpoints
from trialrun.testing.lifecycle import Handler


class GeminiFiles(Endpoints):
    """Uploads and downloads of the fake Gemini server (`BatchEndpoints` builds on it)."""

    _files: dict[str, dict[str, Any]]
    _uploads: dict[str, dict[str, Any]]

    def _gemini_file_routes(
        self, guard: Callable[[Handler], Handler]
    ) -> list[tuple[str, str, Handler]]:
        download = guard(self._gemini_download)
        return [
            ("POST", "/upload/{version}/files", self._gemini_upload),
            ("GET", "/{version}/files/{file_id}:download", download),
            ("GET", "/download/{version}/files/{file_id}:download", download),
        ]

    async def _gemini_upload(self, http: web.Request) -> web.StreamResponse:
        """A session's start (with the key) or its bytes (at the session's URL, without)."""
        try:
            if "upload_id" in http.query:
                return await self._gemini_upload_bytes(http)
            refused = self._refuse(http)
            if refused is not None:
                return self._finish(http, None, "auth", refused)
            return await self._gemini_upload_start(http)
        except Rejected as exc:
            error = web.json_response(gemini_wire.error(exc.status, exc.message), status=exc.status)
            return self._finish(http, exc.body, f"status_{exc.status}", error)

    async def _gemini_upload_start(self, http: web.Request) -> web.StreamResponse:
        headers = http.headers
        if headers.get("X-Goog-Upload-Protocol") != "resumable":
            raise Rejected(400, "X-Goog-Upload-Protocol: resumable is required")
        if headers.get("X-Goog-Upload-Command") != "start":
            raise Rejected(400, "X-Goog-Upload-Command must be 'start' to begin an upload")
        size = headers.get("X-Goog-Upload-Header-Content-Length", "")
        if not size.isdigit():
            raise Rejected(400, "X-Goog-Upload-Header-Content-Length: the file's size is required")
        try:
            body = await http.json()
        except ValueError:
            raise Rejected(400, "request body is not JSON") from None
        file = (body or {}).get("file") or {}
        mime = headers.get("X-Goog-Upload-Header-Content-Type") or gemini_wire.camel(
            file, "mime_type"
        )
        upload_id = new_id("upload-")
        with self._lock:
            self._uploads[upload_id] = {
                "size": int(size),
                "mime_type": str(mime or "application/octet-stream"),
                "display_name": gemini_wire.camel(file, "display_name"),
                "data": bytearray(),
            }
        self._note(http, body, "batch")
        url = (
            f"http://127.0.0.1:{self.port}{http.path}"
            f"?upload_id={upload_id}&upload_protocol=resumable"
        )
        return web.json_response(
            {}, headers={"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"}
        )

    async def _gemini_upload_bytes(self, http: web.Request) -> web.StreamResponse:
        with self._lock:
            session = self._uploads.get(http.query["upload_id"])
        if session is None:
            raise Rejected(404, "no such upload session")
        command = {
            part.strip() for part in http.headers.get("X-Goog-Upload-Command", "").split(",")
        }
        offset = http.headers.get("X-Goog-Upload-Offset", "")
        if "upload" not in command or not offset.isdigit():
            raise Rejected(
                400, "X-Goog-Upload-Command: upload and X-Goog-Upload-Offset are required"
            )
        chunk = await http.read()
        with self._lock:
            if int(offset) != len(session["data"]):
                raise Rejected(
                    400, f"offset {offset}: {len(session['data'])} bytes received so far"
                )
            session["data"] += chunk
            final = "finalize" in command
            if final and len(session["data"]) != session["size"]:
                raise Rejected(
                    400, f"{len(session['data'])} bytes uploaded of {session['size']} declared"
                )
            if final:
                del self._uploads[http.query["upload_id"]]
                file = self._add_gemini_file(
                    bytes(session["data"]),
                    session["mime_type"],
                    session["display_name"],
                    "UPLOADED",
                )
        if not final:
            self._note(http, None, "batch")
            return web.Response(headers={"X-Goog-Upload-Status": "active"})
        self._note(http, None, "batch", {"file": file})
        return web.json_response({"file": file}, headers={"X-Goog-Upload-Status": "final"})

    def _add_gemini_file(
        self, content: bytes, mime_type: str, display_name: str | None, source: str
    ) -> dict[str, Any]:
        """Store a file (with the lock held) and return it as the Files API shows it."""
        name = new_id("files/")
        now = time.time()
        file: dict[str, Any] = {
            "name": name,
            "mimeType": mime_type,
            "sizeBytes": str(len(content)),
            "createTime": rfc3339(now),
            "updateTime": rfc3339(now),
            "expirationTime": rfc3339(now + 2 * DAY_S),
            "uri": f"http://127.0.0.1:{self.port}/v1beta/{name}",
            "state": "ACTIVE",
            "source": source,
        }
        if display_name:
            file["displayName"] = display_name
        self._files[name] = {"file": file, "content": content}
        return file

    def _gemini_input(self, name: str) -> list[dict[str, Any]]:
        """A job's requests from its input file: each line's key and request."""
        with self._lock:
            stored = self._files.get(name)
        if stored is None:
            raise Rejected(400, f"inputConfig.fileName: no file {name!r}")
        requests = []
        for number, line in enumerate(stored["content"].splitlines()):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise Rejected(400, f"{name} line {number + 1}: not JSON") from None
            if not isinstance(item, dict) or not isinstance(item.get("key"), str):
                raise Rejected(400, f"{name} line {number + 1}: a string `key` is required")
            if not isinstance(item.get("request"), dict):
                raise Rejected(400, f"{name} line {number + 1}: a `request` object is required")
            requests.append({"custom_id": item["key"], "request": item["request"]})
        if not requests:
            raise Rejected(400, f"{name}: the input file holds no requests")
        return requests

    def _gemini_results_file(self, record: dict[str, Any]) -> None:
        """An ended file job's results file (with the lock held): a line per request it
        answered, keyed as its request was."""
        content = "".join(json.dumps(line) + "\n" for line in record["lines"]).encode()
        name = f"batch-{record['id'].removeprefix('batches/')}"
        record["responses_file"] = self._add_gemini_file(
            content, "application/jsonl", name, "GENERATED"
        )["name"]

    async def _gemini_download(self, http: web.Request) -> web.StreamResponse:
        if http.query.get("alt") != "media":
            raise Rejected(400, "a download needs alt=media")
        name = f"files/{http.match_info['file_id']}"
        with self._lock:
            stored = self._files.get(name)
        if stored is None:
            raise Rejected(404, f"File {name} not found.")
        self._note(http, None, "batch")
        return web.Response(body=stored["content"], content_type="application/octet-stream")
