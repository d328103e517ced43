"""`trialrun collect`."""

from __future__ import annotations

import click
from rich.console import Console

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout
from trialrun.cli.outcome import finish
from trialrun.display import ProgressObserver, print_summary


@click.command("collect")
@click.argument("run", required=False)
@click.option(
    "--wait", is_flag=True, help="Keep collecting, polling adaptively, until the run is finished."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@runs_dir_option
def command(run: str | None, wait: bool, quiet: bool, runs_dir: str) -> None:
    """Advance a batch-mode RUN one step (default: the latest run), then exit.

    Polls its batches, stores what finished, resubmits what failed or expired, and
    submits every trial's next turn. Safe to call again at any time, from cron or from
    two shells at once: a second caller finds the run locked and leaves it be.

    \b
    Examples:
      trialrun collect runs/pilot-20261123-101500-ab12
      trialrun collect --wait                    # until the latest run is finished
      */10 * * * * cd ~/exp && trialrun collect RUN --quiet   # crontab
    """
    observer = api.Observer() if quiet else ProgressObserver()
    target = api.collect(run, runs_dir=runs_dir, observer=observer, wait=wait)
    if not quiet:
        print_summary(target, stdout())
    finish([target], Console(stderr=True, soft_wrap=True))
