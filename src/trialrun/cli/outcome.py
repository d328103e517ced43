"""The exit status of `run`, `resume` and `collect`, so a script or a job array can tell.

0    every trial is done (or, in batch mode, still out in batches)
3    the run finished, but some of its trials failed (their records say why;
     `trialrun resume RUN --retry-failed` runs them again)
1    every finished trial failed, or the run stopped with trials pending
2    the input was wrong (nothing was run); 130: stopped by a signal
"""

from __future__ import annotations

from collections.abc import Sequence

import click
from rich.console import Console
from rich.text import Text

from trialrun import api
from trialrun.display import plain

SOME_FAILED = 3
ALL_FAILED = 1


def exit_status(run: api.Run) -> int:
    counts = run.counts()
    if counts["pending"] + counts["running"] or not counts["failed"]:
        return 0
    return ALL_FAILED if not counts["done"] else SOME_FAILED


def finish(runs: Sequence[api.Run], console: Console) -> None:
    """Exit with the status of the worst run (see the module docstring), saying why."""
    statuses = [exit_status(run) for run in runs]
    for run, status in zip(runs, statuses, strict=True):
        if status == ALL_FAILED:
            line = Text.assemble("every trial of ", plain(run.run_id), " failed; first error: ")
            console.print(line + plain(_first_error(run)))
    if ALL_FAILED in statuses:
        raise click.exceptions.Exit(ALL_FAILED)
    if SOME_FAILED in statuses:
        raise click.exceptions.Exit(SOME_FAILED)


def _first_error(run: api.Run) -> str:
    for record in run.records():
        if record["error"]:
            return str(record["error"])
    return "unknown"
