"""The `trialrun` command: argument parsing and printing only; the work is in `trialrun.api`."""

from __future__ import annotations

import errno
import sqlite3
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
    except (OSError, sqlite3.OperationalError) as exc:  # the machine's trouble, not the input's
        _error_line(_system_error(exc))
        return 1
    return code if isinstance(code, int) else 0


def _system_error(exc: Exception) -> str:
    text = str(exc)
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    if full or "disk is full" in text or "disk I/O error" in text:
        return (
            f"{text}: the disk is full (or a file-size limit was hit). Committed results are "
            "safe; free some space, then: trialrun resume"
        )
    return text


def _error_line(message: str) -> None:
    """One line on stderr, never wrapped, never read as markup; control characters from the
    user's input (newlines, separators) are shown escaped, so the line stays one line."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print("[bold red]trialrun: error:[/bold red] ", end="")
    console.print(_one_line(message), markup=False)


def _one_line(text: str) -> str:
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def main() -> None:
    sys.exit(run_cli())


__all__ = ["cli", "main", "run_cli"]
