"""`trialrun view`."""

from __future__ import annotations

import click

from trialrun import api
from trialrun.cli.common import stdout


@click.command("view")
@click.argument("runs_dir", required=False, default="runs", type=click.Path(file_okay=False))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port on 127.0.0.1 (0: any free port).",
)
def command(runs_dir: str, port: int) -> None:
    """A live local dashboard of the runs under RUNS_DIR (default: runs), on 127.0.0.1.

    Shows each run's state, progress, spend and ETA; a page per run with the report's
    rates, comparisons, judges, scores and usage, refreshing as trials finish, and its
    batch jobs; a record browser with filters (model, cell, status, score, verdict).
    Runs are read with read-only SQLite connections, so a run being written is never
    blocked or slowed. Listens on 127.0.0.1 only; stop it with Ctrl-C.

    \b
    Examples:
      trialrun view                     # the runs under ./runs → http://127.0.0.1:8765/
      trialrun view out/runs --port 0   # any free port; the address is printed
    """
    server = api.serve_view(runs_dir, port)
    stdout().print(
        f"trialrun view: {server.url} (runs under {runs_dir}; Ctrl-C stops)", markup=False
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
