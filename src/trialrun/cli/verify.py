"""`trialrun verify`."""

from __future__ import annotations

import click
from rich.table import Table

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout
from trialrun.display import plain

COLOURS = {"match": "green", "ok": "green", "unknown": "yellow"}


@click.command("verify")
@click.argument("run", required=False)
@runs_dir_option
def command(run: str | None, runs_dir: str) -> None:
    """Check RUN against its manifest: are the files it was made from unchanged, and is its
    store whole (default: the latest run)?

    \b
    Files: the config, dataset, judge prompt files, disjoint_from datasets and scorer
    modules are hashed again (SHA-256 of their bytes): match, changed or missing. The
    config's message templates and follow-ups, and the dataset's items as the run read
    them, are compared one by one. Store: PRAGMA integrity_check, every planned trial
    present, a record per finished trial, results.jsonl identical to the records.
    Exits 0 when everything matches, 1 otherwise.
    """
    target = api.open_run(run, runs_dir)
    lines = api.verify_run(target)
    table = Table(title=f"verify {target.run_id}", title_justify="left")
    for column in ("check", "status", "path", "detail"):
        table.add_column(column, overflow="fold")
    for line in lines:
        colour = COLOURS.get(line.status, "red")
        table.add_row(
            plain(line.what), plain(line.status, colour), plain(line.where), plain(line.detail)
        )
    console = stdout()
    console.print(table)
    bad = [line for line in lines if not line.ok]
    if bad:
        console.print(f"{len(bad)} of {len(lines)} checks do not match")
        raise click.exceptions.Exit(1)
    console.print(f"all {len(lines)} checks match")
