"""`trialrun view`: a live local dashboard over the runs under a folder, on 127.0.0.1.

- `server.py`: the standard library's threading HTTP server and its routes;
- `live.py`: the run page's report sections, recomputed in the background as runs write;
- `browse.py`: the record browser (filters, pages keyed by plan order);
- `pages.py`: the HTML.

Every request opens the run's SQLite read-only and closes it before answering: WAL
readers neither block nor slow the process writing the run.
"""

from __future__ import annotations

from pathlib import Path

from trialrun.view.server import HOST, Dashboard

__all__ = ["HOST", "Dashboard", "serve_view"]


def serve_view(runs_dir: str | Path = "runs", port: int = 0) -> Dashboard:
    """A dashboard over `runs_dir` on 127.0.0.1:`port` (0: a free port), not yet serving:
    call `serve_forever()`, or `start()` to serve from a daemon thread; `shutdown()` and
    `server_close()` stop it."""
    return Dashboard(Path(runs_dir), port)
