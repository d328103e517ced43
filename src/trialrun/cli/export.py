"""`trialrun export`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from trialrun import api
from trialrun.cli.common import runs_dir_option
from trialrun.export import export, export_file


@click.command("export")
@click.argument("run", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="Output format.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="File to write whole, replacing it only once complete (default: standard output).",
)
@runs_dir_option
def command(run: str | None, fmt: str, output: str | None, runs_dir: str) -> None:
    """Export RUN's committed records as JSONL (one record a line) or flat CSV."""
    target = api.open_run(run, runs_dir)
    store = target.store()
    try:
        if output is None:
            export(store, fmt, sys.stdout)
            return
        count = export_file(store, fmt, Path(output))
        click.echo(f"{count} records → {output}", err=True)
    finally:
        store.close()
