"""`trialrun run`."""

from __future__ import annotations

import click

from trialrun import api
from trialrun.cli.common import split_args, stdout
from trialrun.display import ProgressObserver, print_summary


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, required=True, metavar="CONFIG... [KEY=VALUE ...]")
@click.option(
    "--mock",
    is_flag=True,
    help="Swap every API model for the offline mock provider of the same name.",
)
@click.option(
    "--multirun",
    is_flag=True,
    help="Sweep: one experiment per combination of comma-separated override values.",
)
@click.option("--shard", metavar="I/N", help="Run only shard I of N (0 <= I < N), a stable 1/N.")
@click.option("--limit", type=click.IntRange(min=1), help="Run only the first N trials.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(
    args: tuple[str, ...],
    mock: bool,
    multirun: bool,
    shard: str | None,
    limit: int | None,
    quiet: bool,
) -> None:
    """Run experiments: each CONFIG becomes a run folder; all run in this one process.

    KEY=VALUE overrides any config key by dotted path; values are YAML
    (repeats=3, grid.temperature=[0,0.7], models.0.params.max_tokens=64).

    \b
    Examples:
      trialrun run exp.yaml
      trialrun run exp.yaml repeats=5 --mock
      trialrun run a.yaml b.yaml c.yaml             # three experiments, one process
      trialrun run exp.yaml --multirun dataset.path=a.jsonl,b.jsonl
    """
    configs, overrides = split_args(args)
    prepared = api.load_many(
        configs, overrides, multirun=multirun, mock=mock, shard=shard, limit=limit
    )
    observer = api.Observer() if quiet else ProgressObserver()
    runs = api.run_prepared(prepared, observer)
    console = stdout()
    for run in runs:
        print_summary(run, console)
