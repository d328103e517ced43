"""`trialrun ls`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout

COLUMNS = ("run", "state", "done", "failed", "pending", "total", "mock", "overrides")
LEFT = {"run", "state", "mock", "overrides"}


@click.command("ls")
@runs_dir_option
def command(runs_dir: str) -> None:
    """List the runs under the output folder, oldest first, with each one's overrides."""
    runs = api.list_runs(Path(runs_dir))
    if not runs:
        click.echo(f"no runs under {runs_dir}/")
        return
    table = Table()
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in LEFT else "right")
    for run in runs:
        table.add_row(*_row(run))
    stdout().print(table)


def _row(run: api.Run) -> tuple[str, ...]:
    """One run's cells; the overrides tell apart the runs of one `--multirun`."""
    counts = run.counts()
    meta = run.meta()
    left = counts["pending"] + counts["running"]
    state = "running" if run.is_running() else ("finished" if not left else "stopped")
    overrides = " ".join(meta.get("overrides") or []) or "-"
    return (
        run.run_id,
        state,
        str(counts["done"]),
        str(counts["failed"]),
        str(left),
        str(sum(counts.values())),
        "yes" if meta.get("mock") else "no",
        overrides,
    )
