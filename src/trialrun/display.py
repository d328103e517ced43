"""What people see: live progress while runs go, and the summary table at the end.

Text from outside trialrun (servers' error messages, event details, run ids, paths, model
names, config values) reaches the terminal only through `plain()`: never read as rich
markup (a `[/]` in an error would crash every later `status`), control characters and
ANSI escapes spelled out instead of obeyed.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
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
from rich.text import Text

from trialrun.api import Observer, Run
from trialrun.executor.batch import CollectReport
from trialrun.executor.trial import ExperimentRun
from trialrun.store import BATCH_OPEN


def visible(text: object) -> str:
    """`text` with every unprintable character (ESC of an ANSI sequence, newline, bidi
    override) written as its Python escape, so outside text can neither restyle the
    terminal, nor break a line, nor hide part of itself."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def plain(text: object, style: str = "") -> Text:
    """Outside text as a rich `Text`: shown literally, never parsed as markup or emoji."""
    return Text(visible(text), style=style)


def cost_text(known: float | None, unknown: int) -> str:
    """A cost that never passes an unknown one off as $0 (SQL sums skip NULLs): the known
    part plus how many costs are unknown, or `unknown` when none is known."""
    if not unknown:
        return f"${known or 0.0:,.4f}"
    if known is None:
        return "unknown"
    return f"${known:,.4f} + {unknown:,} unknown"


class ProgressObserver(Observer):
    """A rich progress bar per run (on stderr), advanced only when records are committed."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}", style="yellow", markup=False),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.failed: dict[str, int] = {}
        self.initial: dict[str, int] = {}
        self.waits: dict[str, float] = {}
        """Until when (Unix time) each run's line says a lane is paused."""

    def started(self, run: Run, total: int, finished: int) -> None:
        if not self.tasks:
            self.progress.start()
        self.failed[run.run_id] = 0
        self.initial[run.run_id] = finished
        self.tasks[run.run_id] = self.progress.add_task(
            visible(run.run_id), total=total, completed=finished, failed=0, rate="", note=""
        )

    def waiting(self, run: Run, lane: str, seconds: float, note: str) -> None:
        """A lane waits out a server's Retry-After: say until when, on the run's line."""
        until = time.time() + seconds
        self.waits[run.run_id] = until
        stamp = time.strftime("%H:%M:%S", time.localtime(until))
        self.progress.update(
            self.tasks[run.run_id], note=visible(f"{lane} paused until {stamp} (Retry-After)")
        )

    def committed(self, run: Run, done: int, failed: int) -> None:
        task_id = self.tasks[run.run_id]
        self.failed[run.run_id] += failed
        self.progress.update(task_id, advance=done + failed, failed=self.failed[run.run_id])
        task = self.progress.tasks[task_id]
        fresh = task.completed - self.initial[run.run_id]
        if task.elapsed:
            self.progress.update(task_id, rate=f"{fresh / task.elapsed:,.0f} trials/s")
        if self.waits.get(run.run_id, 0.0) and time.time() > self.waits[run.run_id]:
            self.waits[run.run_id] = 0.0
            self.progress.update(task_id, note="")

    def warn(self, message: str) -> None:
        self.console.print(Text.assemble(("warning: ", "yellow"), plain(message)))

    def collected(self, run: ExperimentRun, report: CollectReport) -> None:
        super().collected(run, report)
        if report.changed or not report.open_batches:
            self.progress.console.print(plain(f"{run.run_id}: {report.line()}"))

    def finished(self) -> None:
        if self.tasks:
            self.progress.stop()


# ------------------------------------------------------------------ the summary at the end

COLUMNS = ("model", "cell", "done", "failed", "tokens", "latency/trial", "cost", "cache hits")


def summary_table(run: Run, rows: list[dict[str, Any]] | None = None) -> Table:
    """Per model x cell; model and cell text fold rather than being cut off."""
    table = Table(title=plain(run.run_id), title_justify="left")
    for column in COLUMNS:
        left = column in {"model", "cell"}
        table.add_column(column, justify="left" if left else "right", overflow="fold")
    for row in run.summary() if rows is None else rows:
        table.add_row(*_summary_cells(row))
    return table


def _summary_cells(row: dict[str, Any]) -> list[Text]:
    return [
        plain(row["model"]),
        plain(_cell_text(row["grid"])),
        Text(f"{row['done']:,}"),
        Text(f"{row['failed']:,}", style="red" if row["failed"] else ""),
        Text(f"{row['tokens']:,}"),
        Text(_seconds(row["mean_latency_s"])),
        Text(cost_text(row["cost_usd"], row["cost_unknown"])),
        Text(f"{row['cache_hits']:,}"),
    ]


def _summary_lines(run: Run, rows: list[dict[str, Any]], width: int) -> Group:
    """The summary for a terminal too narrow for the table: per row, its model and cell on
    one line (wrapped, never cut), then its numbers packed into lines of `width`."""
    lines: list[RenderableType] = [plain(run.run_id, "italic")]
    for row in rows:
        model, cell, *numbers = _summary_cells(row)
        lines.append(Text.assemble(model, "  ", cell, style="bold"))
        pairs = [Text(f"{k} ") + v for k, v in zip(COLUMNS[2:], numbers, strict=True)]
        lines.extend(_packed(pairs, width))
    return Group(*lines)


def _packed(pairs: list[Text], width: int) -> list[Text]:
    """`pairs` on indented lines, joined by " · ", a pair never split across two lines."""
    lines = [Text("  ")]
    for pair in pairs:
        if len(lines[-1]) > 2 and len(lines[-1]) + 3 + len(pair) > width:
            lines.append(Text("  "))
        elif len(lines[-1]) > 2:
            lines[-1].append(" · ")
        lines[-1].append_text(pair)
    return lines


def _cell_text(grid_json: str) -> str:
    grid: dict[str, Any] = json.loads(grid_json)
    return ", ".join(f"{k}={v}" for k, v in grid.items()) or "-"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def print_summary(run: Run, console: Console) -> None:
    rows = run.summary()
    if rows:
        table = summary_table(run, rows)
        unbounded = console.options.update_width(1 << 20)  # else rich clamps to the width
        fits = Measurement.get(console, unbounded, table).minimum <= console.width
        console.print(table if fits else _summary_lines(run, rows, console.width))
    for line in judge_lines(run.judges()):
        console.print(line)
    counts = run.counts()
    left = counts["pending"] + counts["running"]
    tail = f", {left:,} pending" if left else ""
    console.print(
        Text.assemble(
            f"{counts['done']:,} done, {counts['failed']:,} failed{tail} → ",
            plain(run.path, "bold"),
        )
    )
    if left and run.meta().get("mode") == "batch":
        console.print(_batch_news(run))


def judge_lines(judges: list[dict[str, Any]]) -> list[Text]:
    """One line per judge: verdicts, errors by kind, trials left to judge, calls and cost,
    apart from the trials' own (a judge that failed on a trial never counts as a verdict)."""
    lines = []
    for judge in judges:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(judge["error_kinds"].items()))
        errors = f"{judge['errors']:,} judge errors" + (f" ({kinds})" if kinds else "")
        left = f", {judge['to_judge']:,} to judge" if judge["to_judge"] else ""
        cost = cost_text(judge["cost_usd"], judge["cost_unknown"])
        older = (
            f"; {judge['other_specs']:,} judgments under an earlier spec kept"
            if judge["other_specs"]
            else ""
        )
        lines.append(
            Text.assemble(
                "judge"
                if judge["name"] == "judge"
                else Text.assemble("judge ", plain(judge["name"], "bold")),
                " (",
                plain(judge["model"]),
                f"): {judge['verdicts']:,} verdicts, ",
                Text(errors, style="red" if judge["errors"] else ""),
                f"{left}; {judge['calls']:,} calls, {cost}{older}",
            )
        )
    return lines


def _batch_news(run: Run) -> Text:
    """After a batch-mode pass: how many batches are out, or that none is and why."""
    store = run.store()
    try:
        batches, events = store.batches(BATCH_OPEN), store.events()
    finally:
        store.close()
    out = [b for b in batches if b["state"] == "open"]
    unanswered = [b for b in batches if b["state"] == "submitting"]
    path = plain(run.path, "bold")
    if out:
        requests = sum(b["requests"] for b in out)
        return Text.assemble(
            f"{len(out)} batch{'es' if len(out) != 1 else ''} out ({requests:,} requests); "
            "results come within 24 h. Collect them with `trialrun collect ", path,
            " --wait`, or run `trialrun collect ", path, "` from cron: each call stores "
            "what finished and submits the next stage.",
        )  # fmt: skip
    errors = [detail for _, kind, detail in events if kind == "batch_submit_error"]
    news = Text("no batch was submitted")
    if unanswered:
        news = Text(
            f"no batch is confirmed submitted: {len(unanswered)} submission"
            f"{'s' if len(unanswered) != 1 else ''} got no answer"
        )
    if errors:
        news += Text.assemble(" (last error: ", plain(errors[-1]), ")")
    return news + Text.assemble(
        ". See `trialrun status ", path, "`; `trialrun collect ", path, "` tries again."
    )
