"""`trialrun doctor`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from trialrun import doctor
from trialrun.cli.common import runs_dir_option, stdout
from trialrun.display import plain


@click.command("doctor")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@runs_dir_option
def command(config: str | None, runs_dir: str) -> None:
    """Check Python, packages, GPUs, disk and cache; with CONFIG, its dataset, providers and keys.

    GPUs come from nvidia-smi, else torch.cuda; the local extra (hf/ models) is listed with its
    versions. Keys are reported as set or not set, never printed. Exits 1 if a check fails.
    """
    checks = doctor.environment_checks(Path(runs_dir))
    if config:
        checks += doctor.config_checks(Path(config))
    console = stdout()
    for check in checks:
        mark = ("ok  ", "green") if check.ok else ("FAIL", "red")
        console.print(Text.assemble(mark, " ", plain(check.name), ": ", plain(check.detail)))
    if not all(check.ok for check in checks):
        raise click.exceptions.Exit(1)
