"""`trialrun doctor`."""

from __future__ import annotations

from pathlib import Path

import click

from trialrun import doctor
from trialrun.cli.common import runs_dir_option, stdout


@click.command("doctor")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@runs_dir_option
def command(config: str | None, runs_dir: str) -> None:
    """Check Python, packages, disk and cache; with CONFIG, its providers and keys.

    Keys are reported as set or not set, never printed. Exits 1 if a check fails.
    """
    checks = doctor.environment_checks(Path(runs_dir))
    if config:
        checks += doctor.config_checks(Path(config))
    console = stdout()
    for check in checks:
        mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {check.name}: {check.detail}")
    if not all(check.ok for check in checks):
        raise click.exceptions.Exit(1)
