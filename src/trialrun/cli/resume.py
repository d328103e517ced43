"""`trialrun resume`."""

from __future__ import annotations

import click
from rich.console import Console

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout
from trialrun.cli.outcome import finish
from trialrun.display import ProgressObserver, print_summary
from trialrun.errors import UsageError


@click.command("resume", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, metavar="[RUN...] [mode=realtime|batch] [budget.max_usd=N]")
@click.option("--retry-failed", is_flag=True, help="Also run again the trials that failed.")
@click.option(
    "--ignore-gate",
    "ignore_gates",
    multiple=True,
    metavar="NAME",
    help="Go on past this gate (repeatable); it stays ignored on later resumes.",
)
@click.option("--wait", is_flag=True, help="Batch mode: collect until the run is finished.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@runs_dir_option
def command(
    args: tuple[str, ...],
    retry_failed: bool,
    ignore_gates: tuple[str, ...],
    wait: bool,
    quiet: bool,
    runs_dir: str,
) -> None:
    """Continue stopped or crashed RUNs (folders, ids or sync URLs; default: the latest).

    A RUN given as a sync URL (output.sync's URL/RUN_ID: s3://bucket/prefix/RUN_ID) is
    downloaded from its latest snapshot into --dir first, then continued there.

    Work in flight at the stop is redone; committed results are never sent again.
    `mode=realtime` finishes a batch run's stragglers in real time (their batches are
    cancelled at the provider where possible, and the run says which); `mode=batch`
    moves a real-time run's remaining trials to batches. `budget.max_usd=N` continues a
    run stopped at its budget with a higher cap (more than it has spent).

    \b
    Examples:
      trialrun resume                                  # the latest run
      trialrun resume runs/pilot-20261123-101500-ab12 mode=realtime
      trialrun resume budget.max_usd=60                # past the budget it stopped at
      trialrun resume s3://bucket/sweeps/pilot-20261123-101500-ab12   # on a new machine
    """
    runs = [arg for arg in args if "=" not in arg]
    mode, budget = None, None
    for arg in args:
        if "=" in arg:
            key, _, value = arg.partition("=")
            if key == "budget.max_usd":
                budget = _usd(arg, value)
                continue
            if key != "mode" or value not in ("realtime", "batch"):
                raise UsageError(
                    f"'{arg}': resume takes only mode=realtime, mode=batch or budget.max_usd=N"
                )
            mode = value
    observer = api.Observer() if quiet else ProgressObserver()
    targets = [api.open_target(ref, runs_dir) for ref in runs] or [api.open_run(None, runs_dir)]
    api.resume_many(
        targets,
        retry_failed=retry_failed,
        observer=observer,
        mode=mode,
        wait=wait,
        budget_usd=budget,
        ignore_gates=ignore_gates,
    )
    console = stdout()
    for target in targets:
        print_summary(target, console)
    finish(targets, Console(stderr=True, soft_wrap=True))


def _usd(arg: str, value: str) -> float:
    try:
        usd = float(value)
    except ValueError:
        usd = -1.0
    if not usd > 0 or usd == float("inf"):
        raise UsageError(f"'{arg}': expected a number of dollars above 0")
    return usd
