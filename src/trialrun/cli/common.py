"""Helpers shared by the commands: consoles, argument splitting, run lookup."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import click
from rich.console import Console

from trialrun.config import Experiment
from trialrun.errors import UsageError

runs_dir_option = click.option(
    "--dir",
    "runs_dir",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder holding run folders.",
)


class LoadOptions(TypedDict):
    """How `run` and `plan` load their configs: keywords for `api.load_many`."""

    mock: bool
    multirun: bool
    shard: str | None
    limit: int | None


Command = Callable[..., None]


def load_options(
    *, mock: str, multirun: str, shard: str, limit: str
) -> Callable[[Command], Command]:
    """--mock, --multirun, --shard and --limit, each with the command's own help text,
    handed to the command together as `load` (so `run` and `plan` declare them once)."""
    options = [
        click.option("--mock", is_flag=True, help=mock),
        click.option("--multirun", is_flag=True, help=multirun),
        click.option("--shard", metavar="I/N|auto", help=shard),
        click.option("--limit", type=click.IntRange(min=1), help=limit),
    ]

    def decorate(command: Command) -> Command:
        @functools.wraps(command)
        def gathered(**kwargs: Any) -> None:
            load = LoadOptions(
                mock=kwargs.pop("mock"),
                multirun=kwargs.pop("multirun"),
                shard=kwargs.pop("shard"),
                limit=kwargs.pop("limit"),
            )
            command(load=load, **kwargs)

        for option in reversed(options):
            gathered = option(gathered)
        return gathered

    return decorate


def stdout() -> Console:
    """Standard output; when it is not a terminal (a file, a pipe, CI), wide enough not to truncate."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


def _exists(arg: str) -> bool:
    try:
        return Path(arg).exists()
    except (OSError, ValueError):  # a name too long for a path, or with a NUL byte
        return False


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def split_args(args: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """CONFIG files and KEY=VALUE overrides, in any order (an existing file is a config)."""
    configs, overrides = [], []
    for index, arg in enumerate(args):
        if arg.startswith("-") and not _exists(arg):
            raise UsageError(f"unknown option '{arg}' (see --help)")
        if "=" in arg and not _exists(arg):
            overrides.append(arg)
            continue
        meant = _override_meant(arg, args[index + 1 : index + 2])
        if meant:
            raise UsageError(f"'{arg}' is not a config file: did you mean {meant}?")
        configs.append(arg)
    if not configs:
        raise UsageError("no CONFIG given: name a config file, e.g. trialrun run exp.yaml")
    return configs, overrides


def _override_meant(arg: str, following: tuple[str, ...]) -> str | None:
    """`repeats=5` for `repeats 5` (one argument or two) that names no file: a config key
    with a space where the `=` should be would otherwise read as a missing config file."""
    key, _, value = arg.strip().partition(" ")
    if _exists(arg) or key.split(".")[0] not in Experiment.model_fields:
        return None
    if "/" in key or key.lower().endswith(CONFIG_SUFFIXES):  # grid.yaml: a missing file
        return None
    if not value and following and "=" not in following[0] and not _exists(following[0]):
        value = following[0]
    return f"{key}={value.strip() or 'VALUE'}"
