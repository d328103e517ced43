"""`trialrun run`."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import click
from rich.console import Console

from trialrun import api
from trialrun.cli.common import LoadOptions, load_options, split_args, stdout
from trialrun.cli.outcome import finish
from trialrun.cli.preparing import print_warnings, trial_progress
from trialrun.display import ProgressObserver, plain, print_summary


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, required=True, metavar="CONFIG... [KEY=VALUE ...]")
@load_options(
    mock="Swap every API model for the offline mock provider of the same name.",
    multirun="Sweep: one experiment per combination of comma-separated override values.",
    shard="Run only shard I of N (0 <= I < N), a stable 1/N; auto: this task's of a SLURM array or Google Cloud Batch job.",
    limit="Run only the first N trials.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--wait", is_flag=True, help="Batch mode: collect until finished instead of returning."
)
@click.option(
    "--detach",
    is_flag=True,
    help="Check and create the run folders, then finish them in a background process.",
)
def command(
    args: tuple[str, ...], load: LoadOptions, quiet: bool, wait: bool, detach: bool
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
      trialrun run exp.yaml mode=batch              # submit batches at half price, return
      trialrun run exp.yaml --detach                # return now; the work goes on
    """
    configs, overrides = split_args(args)
    prepared = api.load_many(configs, overrides, **load)
    told = print_warnings(prepared)
    console = stdout()
    writing = nullcontext() if quiet else trial_progress(prepared, "writing")
    if detach:
        _detach(prepared, writing, console)
        return
    observer = api.Observer() if quiet else _NewWarnings(told)
    with writing:
        runs = api.run_prepared(prepared, observer, wait=wait)
    for run in runs:
        print_summary(run, console)
    finish(runs, Console(stderr=True, soft_wrap=True))


def _detach(
    prepared: list[api.Prepared], writing: AbstractContextManager[object], console: Console
) -> None:
    """`--detach`: the run folders are created here (so errors show now), then finished by
    a background process; print where they are and how to follow them."""
    with writing:
        runs = api.create_runs(prepared)
    pid = api.detach(runs)
    for run in runs:
        console.print(plain(run.path, "bold"))
    console.print(
        plain(
            f"detached: process {pid} finishes {'these runs' if len(runs) > 1 else 'it'} "
            f"(log: {runs[0].path / 'detached.log'}); follow with `trialrun status RUN`"
        )
    )


class _NewWarnings(ProgressObserver):
    """The progress display, less the warnings already printed when the configs loaded (a
    run repeats some, such as the params a provider cannot take)."""

    def __init__(self, told: set[str]) -> None:
        super().__init__()
        self.told = told

    def warn(self, message: str) -> None:
        if message not in self.told:
            super().warn(message)
