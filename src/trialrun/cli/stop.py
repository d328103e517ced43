"""`trialrun stop`."""

from __future__ import annotations

import click

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout
from trialrun.display import plain


@click.command("stop")
@click.argument("run", required=False)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the process to let the run go.",
)
@runs_dir_option
def command(run: str | None, timeout_s: float, runs_dir: str) -> None:
    """Stop the process executing RUN (detached, or in another shell) cleanly.

    It gets SIGTERM, as from Ctrl-C: in-flight trials go back to pending, results.jsonl
    is rewritten, a configured sync makes its last upload, and the run stays resumable
    (`trialrun resume RUN`). A process running several runs stops them all.
    """
    target = api.open_run(run, runs_dir)
    pid = api.stop_run(target, timeout_s=timeout_s)
    console = stdout()
    if pid is None:
        console.print(plain(f"{target.path}: not running; nothing to stop"))
        return
    console.print(plain(f"stopped process {pid}; continue with: trialrun resume {target.path}"))
