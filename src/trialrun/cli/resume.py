"""`trialrun resume`."""

from __future__ import annotations

import click

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout
from trialrun.display import ProgressObserver, print_summary


@click.command("resume")
@click.argument("run", required=False)
@click.option("--retry-failed", is_flag=True, help="Also run again the trials that failed.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@runs_dir_option
def command(run: str | None, retry_failed: bool, quiet: bool, runs_dir: str) -> None:
    """Continue a stopped or crashed RUN (a folder or id; default: the latest).

    Work in flight at the stop is redone; committed results are never sent again.
    """
    observer = api.Observer() if quiet else ProgressObserver()
    target = api.resume(run, retry_failed=retry_failed, runs_dir=runs_dir, observer=observer)
    print_summary(target, stdout())
