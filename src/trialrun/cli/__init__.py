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
        code = cli.main(args=argv, prog_name="trialrun", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx else "trialrun"
        _error_line(f"{exc.format_message()} (see '{path} --help')")
        return 2
    except click.ClickException as exc:
        _error_line(exc.format_message())
        return 2
    except click.Abort:
        print("trialrun: aborted", file=sys.stderr)
        return 130
    except TrialrunError as exc:
        _error_line(str(exc))
        return exc.exit_code
    return code if isinstance(code, int) else 0


def _error_line(message: str) -> None:
    """One line on stderr, never wrapped, never read as markup."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print("[bold red]trialrun: error:[/bold red] ", end="")
    console.print(message, markup=False)


def main() -> None:
    sys.exit(run_cli())


__all__ = ["cli", "main", "run_cli"]
