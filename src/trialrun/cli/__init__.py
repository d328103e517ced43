"""The `trialrun` command: argument parsing and printing only; the work is in `trialrun.api`."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from trialrun.cli.commands import cli
from trialrun.errors import TrialrunError


def run_cli(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status (user errors: 2, one line, no traceback)."""
    try:
        cli.main(args=argv, prog_name="trialrun", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return 2
    except click.Abort:
        print("trialrun: aborted", file=sys.stderr)
        return 130
    except TrialrunError as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[bold red]trialrun: error:[/bold red] {exc}", markup=True
        )
        return exc.exit_code
    return 0


def main() -> None:
    sys.exit(run_cli())


__all__ = ["cli", "main", "run_cli"]
