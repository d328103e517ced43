"""`trialrun plan`."""

from __future__ import annotations

import click
from rich.table import Table

from trialrun import api
from trialrun.cli.common import split_args, stdout


@click.command("plan", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, required=True, metavar="CONFIG... [KEY=VALUE ...]")
@click.option("--mock", is_flag=True, help="Plan as `run --mock` would (no provider checks).")
@click.option("--multirun", is_flag=True, help="Plan each combination of comma-separated values.")
@click.option("--shard", metavar="I/N", help="Count only shard I of N.")
@click.option("--limit", type=click.IntRange(min=1), help="Count only the first N trials.")
def command(
    args: tuple[str, ...], mock: bool, multirun: bool, shard: str | None, limit: int | None
) -> None:
    """Show what a config would run (items, cells, trials, requests); sends nothing."""
    configs, overrides = split_args(args)
    prepared = api.load_many(
        configs, overrides, multirun=multirun, mock=mock, shard=shard, limit=limit
    )
    table = Table(title="plan", title_justify="left")
    for column in (
        "experiment",
        "items",
        "models",
        "cells",
        "repeats",
        "turns",
        "trials",
        "requests",
    ):
        table.add_column(column, justify="left" if column == "experiment" else "right")
    for p in prepared:
        s = api.plan_summary(p)
        table.add_row(
            s["name"],
            f"{s['items']:,}",
            str(len(s["models"])),
            str(s["cells"]),
            str(s["repeats"]),
            str(s["turns"]),
            f"{s['trials']:,}",
            f"{s['requests']:,}",
        )
    stdout().print(table)
