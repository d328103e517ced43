"""What people see: live progress while runs go, and the summary table at the end."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from trialrun.api import Observer, Run
from trialrun.executor.batch import CollectReport
from trialrun.executor.realtime import ExperimentRun


class ProgressObserver(Observer):
    """A rich progress bar per run (on stderr), advanced only when records are committed."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.failed: dict[str, int] = {}
        self.initial: dict[str, int] = {}

    def started(self, run: Run, total: int, finished: int) -> None:
        if not self.tasks:
            self.progress.start()
        self.failed[run.run_id] = 0
        self.initial[run.run_id] = finished
        self.tasks[run.run_id] = self.progress.add_task(
            run.run_id, total=total, completed=finished, failed=0, rate=""
        )

    def committed(self, run: Run, done: int, failed: int) -> None:
        task_id = self.tasks[run.run_id]
        self.failed[run.run_id] += failed
        self.progress.update(task_id, advance=done + failed, failed=self.failed[run.run_id])
        task = self.progress.tasks[task_id]
        fresh = task.completed - self.initial[run.run_id]
        if task.elapsed:
            self.progress.update(task_id, rate=f"{fresh / task.elapsed:,.0f} trials/s")

    def warn(self, message: str) -> None:
        self.console.print("[yellow]warning:[/yellow] ", end="")
        self.console.print(message, markup=False, highlight=False)

    def collected(self, run: ExperimentRun, report: CollectReport) -> None:
        super().collected(run, report)
        if report.changed or not report.open_batches:
            self.progress.console.print(
                f"{run.run_id}: {report.line()}", markup=False, highlight=False
            )

    def finished(self) -> None:
        if self.tasks:
            self.progress.stop()


def summary_table(run: Run) -> Table:
    table = Table(title=f"{run.run_id}", title_justify="left")
    for column in ("model", "cell", "done", "failed", "tokens", "latency/trial", "cost"):
        table.add_column(column, justify="left" if column in {"model", "cell"} else "right")
    for row in run.summary():
        table.add_row(
            row["model"],
            _cell_text(row["grid"]),
            str(row["done"]),
            f"[red]{row['failed']}[/red]" if row["failed"] else "0",
            f"{row['tokens']:,}",
            _seconds(row["mean_latency_s"]),
            _usd(row["cost_usd"]),
        )
    return table


def _cell_text(grid_json: str) -> str:
    grid: dict[str, Any] = json.loads(grid_json)
    return ", ".join(f"{k}={v}" for k, v in grid.items()) or "-"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.4f}"


def print_summary(run: Run, console: Console) -> None:
    counts = run.counts()
    if counts["done"] + counts["failed"]:
        console.print(summary_table(run))
    left = counts["pending"] + counts["running"]
    tail = f", {left} pending" if left else ""
    console.print(
        f"{counts['done']} done, {counts['failed']} failed{tail} → [bold]{run.path}[/bold]"
    )
    if left and run.meta().get("mode") == "batch":
        console.print(
            f"batches are out; results come within 24 h. Collect them with "
            f"[bold]trialrun collect {run.path} --wait[/bold], or run "
            f"`trialrun collect {run.path}` from cron: each call stores what finished and "
            "submits the next stage."
        )
