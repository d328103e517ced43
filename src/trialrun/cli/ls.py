"""`trialrun ls`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout


@click.command("ls")
@runs_dir_option
def command(runs_dir: str) -> None:
    """List the runs under the output folder, oldest first."""
    runs = api.list_runs(Path(runs_dir))
    if not runs:
        click.echo(f"no runs under {runs_dir}/")
        return
    table = Table()
    for column in ("run", "state", "done", "failed", "pending", "total"):
        table.add_column(column, justify="left" if column in {"run", "state"} else "right")
    for run in runs:
        counts = run.counts()
        left = counts["pending"] + counts["running"]
        state = "running" if run.is_running() else ("finished" if not left else "stopped")
        table.add_row(
            run.run_id,
            state,
            str(counts["done"]),
            str(counts["failed"]),
            str(left),
            str(sum(counts.values())),
        )
    stdout().print(table)
