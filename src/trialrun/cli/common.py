"""Helpers shared by the commands: consoles, argument splitting, run lookup."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from trialrun.errors import UsageError

runs_dir_option = click.option(
    "--dir",
    "runs_dir",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder holding run folders.",
)


def stdout() -> Console:
    """Standard output; when it is not a terminal (a file, a pipe, CI), wide enough not to truncate."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


def _exists(arg: str) -> bool:
    try:
        return Path(arg).exists()
    except (OSError, ValueError):  # a name too long for a path, or with a NUL byte
        return False


def split_args(args: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """CONFIG files and KEY=VALUE overrides, in any order (an existing file is a config)."""
    configs, overrides = [], []
    for arg in args:
        if arg.startswith("-") and not _exists(arg):
            raise UsageError(f"unknown option '{arg}' (see --help)")
        if "=" in arg and not _exists(arg):
            overrides.append(arg)
        else:
            configs.append(arg)
    if not configs:
        raise UsageError("no CONFIG given: name a config file, e.g. trialrun run exp.yaml")
    return configs, overrides
