"""What `plan` and `run` show while configs are prepared: their warnings, and progress while
a huge plan's trials are counted or written (a million trials take seconds to minutes)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from trialrun.api import Prepared
from trialrun.display import plain

SHOW_PROGRESS_FROM = 200_000
"""Plans with fewer trials are written in a second or two: no bar."""


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_warnings(prepared: Sequence[Prepared]) -> set[str]:
    """Each prepared config's warnings as `warning: ...` lines on stderr, each once; returns
    them, so the same line heard again while running is not repeated."""
    console, told = stderr(), set()
    for p in prepared:
        for message in p.warnings:
            if message not in told:
                told.add(message)
                console.print(Text.assemble(("warning: ", "yellow"), plain(message)))
    return told


class TrialProgress:
    """A bar on stderr while one plan's trials go by (plain lines when stderr is no terminal,
    so a log shows it too); fed by `Prepared.progress`."""

    def __init__(self, what: str, expected: int) -> None:
        self.what, self.expected = what, expected
        self.console = stderr()
        self._bar: Progress | None = None
        self._started = 0.0

    def __call__(self, done: int, finished: bool) -> None:
        if not self._started:
            self._start()
        if self._bar is not None:
            self._bar.update(self._bar.task_ids[0], completed=done)
        if finished:
            self.stop(done)

    def _start(self) -> None:
        self._started = time.monotonic()
        if not self.console.is_terminal:
            self.console.print(f"{self.what}: {self.expected:,} trials...", markup=False)
            return
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._bar.add_task(self.what, total=self.expected)
        self._bar.start()

    def stop(self, done: int | None = None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._started and done is not None:
            seconds = time.monotonic() - self._started
            self.console.print(f"{self.what}: {done:,} trials in {seconds:.1f} s", markup=False)
        self._started = 0.0


@contextmanager
def trial_progress(prepared: Sequence[Prepared], what: str) -> Iterator[None]:
    """Show progress for each huge plan while its trials are counted or written inside."""
    shown = []
    for p in prepared:
        if p.expected_trials >= SHOW_PROGRESS_FROM:
            progress = TrialProgress(f"{what} {p.experiment.name}", p.expected_trials)
            p.progress = progress
            shown.append(progress)
    try:
        yield
    finally:
        for progress in shown:
            progress.stop()
        for p in prepared:
            p.progress = None
