"""`trialrun merge`."""

from __future__ import annotations

import click
from rich.console import Console

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout
from trialrun.display import plain

SHOWN_IDS = 5


@click.command("merge")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option(
    "--into",
    required=True,
    metavar="RUN",
    help="The new run folder to write (a bare name goes under --dir).",
)
@runs_dir_option
def command(runs: tuple[str, ...], into: str, runs_dir: str) -> None:
    """Combine shard RUNs (folders, ids or sync URLs) into one new run folder, by trial id.

    The shards must be runs of one config and dataset (`--shard I/N` or `--shard auto`);
    others are refused. Planned trials in no shard are reported as missing; a trial
    recorded differently in two shards as conflicting (the first shard's is kept). The
    merged run works with status, stats, report, compare and export.

    \b
    Examples:
      trialrun merge runs/sweep-*-shard* --into runs/sweep-merged
      trialrun merge s3://bucket/sweeps/sweep-20261123-101500-ab12 s3://... --into sweep-all
    """
    report = api.merge_runs(runs, into, runs_dir)
    console, err = stdout(), Console(stderr=True, soft_wrap=True)
    console.print(plain(str(report.run.path), "bold"))
    console.print(
        f"merged {len(report.shards)} runs: {report.recorded:,} of {report.planned:,} planned "
        "trials recorded"
    )
    for label, ids in (("missing", report.missing), ("conflicting", report.conflicting)):
        if ids:
            shown = ", ".join(ids[:SHOWN_IDS]) + (", ..." if len(ids) > SHOWN_IDS else "")
            note = " (kept the first run's record)" if label == "conflicting" else ""
            err.print(plain(f"{label}: {len(ids):,} trials{note}: {shown}"))
