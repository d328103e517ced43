"""`trialrun export`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from trialrun import api
from trialrun.cli.common import runs_dir_option
from trialrun.errors import UsageError
from trialrun.export import export, export_file, export_partitioned


@click.command("export")
@click.argument("run", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "parquet", "inspect"]),
    default="jsonl",
    show_default=True,
    help="Output format (parquet needs pyarrow: pip install 'trialrun[parquet]'; inspect: "
    "Inspect AI eval logs, one per cell, into the -o folder: pip install 'trialrun[inspect]').",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(writable=True),
    help="File to write whole, replacing it only once complete (default: standard output); "
    "with --partition-by, the folder for the files.",
)
@click.option(
    "--partition-by",
    metavar="FIELD",
    help="One file per value of a column (model, status, grid.KEY, item.FIELD, judge.FIELD): "
    "OUTPUT/<value>.<format>.",
)
@runs_dir_option
def command(
    run: str | None, fmt: str, output: str | None, partition_by: str | None, runs_dir: str
) -> None:
    """Export RUN's committed records as JSONL, flat CSV, Parquet, or Inspect AI eval logs.

    JSONL has one record a line;
    CSV and Parquet one row a trial; Parquet adds the verdicts as columns
    (judge.FIELD, judges.NAME.FIELD, judge_errors.NAME) and keeps each column's type
    (bool, int, float, text). In Python, `trialrun.open_run(RUN).to_pandas()` gives the
    same table as a pandas DataFrame.

    \b
    Examples:
      trialrun export RUN -o results.jsonl
      trialrun export RUN --format parquet -o results.parquet
      trialrun export RUN --format jsonl --partition-by grid.concept -o by_concept/
      trialrun export RUN --format inspect -o logs/ && inspect view --log-dir logs/
    """
    target = api.open_run(run, runs_dir)
    if fmt == "inspect":
        if output is None or partition_by:
            raise UsageError(
                "--format inspect writes one log per cell: give -o FOLDER, no --partition-by"
            )
        logs = api.write_inspect_logs(target, Path(output))
        click.echo(f"{sum(logs.values())} samples → {output} ({len(logs)} logs)", err=True)
        return
    if (fmt == "parquet" or partition_by) and output is None:
        need = "--partition-by" if partition_by else "--format parquet"
        raise UsageError(f"{need} writes files: give -o {'FOLDER' if partition_by else 'FILE'}")
    store = target.store()
    try:
        if output is None:
            export(store, fmt, sys.stdout)
            return
        if partition_by:
            written = export_partitioned(store, fmt, Path(output), partition_by)
            count = sum(written.values())
            click.echo(f"{count} records → {output} ({len(written)} files)", err=True)
            return
        if Path(output).is_dir():
            raise UsageError(f"{output}: is a folder; name a file to write")
        count = export_file(store, fmt, Path(output))
        click.echo(f"{count} records → {output}", err=True)
    finally:
        store.close()
