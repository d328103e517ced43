"""The dashboard's HTTP server: the standard library's `ThreadingHTTPServer` on 127.0.0.1,
one thread per request, each opening the run's SQLite read-only for that request only.

Routes (GET only):

    /                           the runs under the folder
    /runs.json                  the same as JSON (each run's `Run.status()`)
    /runs/RUN                   a run's live page
    /runs/RUN.json              its status as JSON, with `version` (changes when the page would)
    /runs/RUN/live              the page's refreshing part (HTML), fetched by the page itself
    /runs/RUN/records?FILTERS   the record browser, a page at a time
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from trialrun.errors import RunNotFoundError, TrialrunError
from trialrun.report.data import default_compare
from trialrun.runs import Run, list_runs, open_run
from trialrun.view.browse import browse
from trialrun.view.live import LiveReports, Rates, Snapshot, pulse
from trialrun.view.pages import live_fragment, records_page, run_page, runs_page

HOST = "127.0.0.1"
"""The only address the dashboard listens on: it serves run data with no authentication."""
POLL_MS = 2000


class Dashboard(ThreadingHTTPServer):
    """The server, with the folder it shows and the live report cache."""

    daemon_threads = True

    def __init__(self, runs_dir: Path, port: int = 0, poll_ms: int = POLL_MS) -> None:
        super().__init__((HOST, port), Handler)
        self.runs_dir = runs_dir
        self.poll_ms = poll_ms
        self.live = LiveReports()
        self.rates = Rates()

    def server_close(self) -> None:
        super().server_close()
        self.live.close()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"

    def start(self) -> threading.Thread:
        """Serve in a daemon thread (tests, notebooks); `shutdown()` stops it."""
        thread = threading.Thread(
            target=self.serve_forever, args=(0.1,), name="trialrun-view", daemon=True
        )
        thread.start()
        return thread


class Handler(BaseHTTPRequestHandler):
    server: Dashboard
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a dashboard polled every two seconds would fill the terminal."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query))
        try:
            status, kind, body = self._route(unquote(parts.path), params)
        except RunNotFoundError as exc:
            status, kind, body = HTTPStatus.NOT_FOUND, "text/plain", str(exc)
        except TrialrunError as exc:
            status, kind, body = HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", str(exc)
        self._send(status, kind, body)

    def _route(self, path: str, params: dict[str, str]) -> tuple[HTTPStatus, str, str]:
        if path == "/":
            return HTTPStatus.OK, "text/html", self._runs_page()
        if path == "/runs.json":
            return HTTPStatus.OK, "application/json", _json(self._statuses())
        head, _, rest = path.removeprefix("/runs/").partition("/")
        if not path.startswith("/runs/") or not head:
            return HTTPStatus.NOT_FOUND, "text/plain", f"{path}: no such page"
        if head.endswith(".json") and not rest:
            return HTTPStatus.OK, "application/json", _json(self._run_json(head[:-5]))
        run = self._run(head)
        if rest == "":
            return HTTPStatus.OK, "text/html", self._run_page(run)
        if rest == "live":
            fragment = self._fragment(run, self._status(run), self._report(run))
            return HTTPStatus.OK, "text/html", fragment
        if rest == "records":
            found = browse(run, params)
            html = records_page(run.run_id, found.form, found.rows, found.shown, found.next_query)
            return HTTPStatus.OK, "text/html", html
        return HTTPStatus.NOT_FOUND, "text/plain", f"{path}: no such page"

    def _run(self, run_id: str) -> Run:
        """A run directly under the folder, by its exact id (never a path elsewhere)."""
        if "/" in run_id or run_id.startswith("."):
            raise RunNotFoundError(f"{run_id}: no such run")
        return open_run(self.server.runs_dir / run_id, self.server.runs_dir)

    def _status(self, run: Run) -> dict[str, Any]:
        """`Run.status()` as last computed in the background, its cheap fields fresh."""
        cached = self.server.live.get(run, "status")
        slow = cached.value if cached is not None else {}
        fresh = pulse(run, self.server.rates, slow.get("rate_per_s"))
        return {**slow, **fresh, "status_as_of": cached.computed_at if cached else None}

    def _report(self, run: Run) -> Snapshot | None:
        return self.server.live.get(run, "report")

    def _statuses(self) -> list[dict[str, Any]]:
        out = []
        for run in list_runs(self.server.runs_dir):
            try:
                out.append(self._status(run))
            except TrialrunError as exc:
                out.append({"run_id": run.run_id, "error": str(exc)})
        return out

    def _runs_page(self) -> str:
        rows = [(s["run_id"], s.get("error") or s) for s in self._statuses()]
        return runs_page(str(self.server.runs_dir), rows)

    def _run_json(self, run_id: str) -> dict[str, Any]:
        run = self._run(run_id)
        status = self._status(run)
        snapshot = self._report(run)
        status["version"] = _version(status, snapshot)
        status["stats_records"] = snapshot.records if snapshot else None
        return status

    def _run_page(self, run: Run) -> str:
        status = self._status(run)
        snapshot = self._report(run)
        fragment = self._fragment(run, status, snapshot)
        return run_page(run.run_id, fragment, _version(status, snapshot), self.server.poll_ms)

    def _fragment(self, run: Run, status: dict[str, Any], snapshot: Snapshot | None) -> str:
        experiment = run.experiment()
        gates = [g.name or f"gate-{i}" for i, g in enumerate(experiment.gates, 1)]
        compares = default_compare(experiment) is not None
        return live_fragment(status, snapshot, gates, compares)

    def _send(self, status: HTTPStatus, kind: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


def _version(status: dict[str, Any], snapshot: Snapshot | None) -> str:
    """Changes whenever the live part of the run's page would."""
    counts: dict[str, int] = status["counts"]
    stamp = snapshot.computed_at if snapshot else 0.0
    return f"{counts['done'] + counts['failed']}-{stamp:.3f}-{status['running']}"


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)
