"""`trialrun status`. Everything from outside (run ids, batch ids, servers' states and error
messages in events) is printed through `display.plain`, never as markup."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from trialrun import api
from trialrun.cli.common import runs_dir_option, stdout
from trialrun.display import cost_text, judge_lines, plain


@click.command("status")
@click.argument("run", required=False)
@runs_dir_option
def command(run: str | None, runs_dir: str) -> None:
    """Progress of RUN by state, spend so far, rate and ETA (default: the latest run)."""
    target = api.open_run(run, runs_dir)
    info = target.status()
    console = stdout()
    counts = info["counts"]
    state = (
        f"running (process {info['pid'] or '?'} alive)"
        if info["running"]
        else (
            "finished"
            if not counts["pending"] + counts["running"]
            else "stopped (trialrun resume to continue)"
        )
    )
    if info["mode"] == "batch" and state.startswith("stopped"):
        state = "batch mode: `trialrun collect` to advance"
    to_judge = sum(j["to_judge"] for j in info["judges"])
    if state == "finished" and to_judge:
        how = "trialrun collect" if info["mode"] == "batch" else "trialrun judge"
        state = f"trials finished; {to_judge:,} judgments to make (`{how}` makes them)"
    console.print(Text.assemble(plain(info["run_id"], "bold"), f"  {state}"))
    if not info["running"]:
        console.print("process: not running")
    console.print(_state_table(counts, info["live"], info["total"]))
    if info["sync"] is not None:
        console.print(_sync_line(info["sync"]))
    for line in _live_lines(info["live"]) + _logprob_lines(info["missing_logprobs"]):
        console.print(plain(line))
    spend = info["spend"]
    cost = cost_text(spend["cost_usd"], spend["cost_unknown"])
    console.print(
        f"calls {spend['calls']:,} (cache hits {spend['cache_hits']:,}), tokens in "
        f"{spend['input_tokens']:,} / out {spend['output_tokens']:,}, cost {cost}"
    )
    gate = info["gate"]
    if gate and counts["pending"] + counts["running"]:
        word = "paused" if gate["action"] == "pause" else "stopped"
        console.print(
            Text.assemble(
                Text(f"{word} by a gate: ", style="bold red"),
                plain(gate["message"]),
                f" (resume --ignore-gate {gate['name']} goes on)",
            )
        )
    if info["budget"] is not None:
        console.print(_budget_line(info["budget"]))
    for score_line in _score_lines(info["scores"]):
        console.print(score_line)
    for judge_line in judge_lines(info["judges"]):
        console.print(judge_line)
    if info["canaries"] is not None:
        console.print(f"canaries: {info['canaries']:,} records with a canary in a response")
    if info["eta_s"] is not None:
        console.print(f"rate {info['rate_per_s']:.1f} trials/s, ETA {info['eta_s']:.0f} s")
    if info["batches"]:
        console.print(_batch_table(info["batches"]))
    for at, kind, detail in info["events"]:
        console.print(Text.assemble("  ", plain(at), "  ", plain(kind), ": ", plain(detail)))


def _state_table(counts: dict[str, int], live: dict[str, Any] | None, total: int) -> Table:
    """Trials by state. While a process runs the run, its claimed trials are split into those
    with a request at the provider (`in flight`) and those queued behind the limits; once it
    stopped, claimed trials are pending again (resume redoes them)."""
    row = {"pending": counts["pending"], "done": counts["done"], "failed": counts["failed"]}
    if live is None:
        row["pending"] += counts["running"]
    else:
        in_flight = min(int(live.get("in_flight", 0)), counts["running"])
        row = {**row, "queued": counts["running"] - in_flight, "in flight": in_flight}
    order = ["pending", "queued", "in flight", "done", "failed"]
    table = Table(show_header=True)
    shown = [name for name in order if name in row]
    for column in [*shown, "total"]:
        table.add_column(column, justify="right")
    table.add_row(*(f"{row[name]:,}" for name in shown), f"{total:,}")
    return table


def _live_lines(live: dict[str, Any] | None) -> list[str]:
    """Lanes waiting out a server's Retry-After, with the seconds left now."""
    if not live:
        return []
    age = max(time.time() - float(live.get("at", time.time())), 0.0)
    lines = []
    for lane, seconds in sorted(live.get("waiting", {}).items()):
        left = float(seconds) - age
        if left > 0:
            lines.append(f"{lane}: waiting {left:.0f} s more (the server's Retry-After)")
    return lines


def _sync_line(sync: dict[str, Any]) -> Text:
    """The last upload to output.sync: when, and whether it went through."""
    if sync.get("ok"):
        return Text.assemble(
            "sync: ",
            plain(str(sync.get("url"))),
            f" ok at {sync.get('at')} ({sync.get('trials') or 0:,} trials in the snapshot)",
        )
    return Text.assemble(
        Text("sync failed: ", style="bold red"),
        plain(f"{sync.get('url')} at {sync.get('at')}: {sync.get('error')}"),
    )


def _budget_line(budget: dict[str, Any]) -> Text:
    """Spend against the cap, judges included; flagged from `budget.warn_at` on."""
    spent, cap = budget["spent_usd"], budget["max_usd"]
    share = spent / cap
    style = "bold red" if share >= budget["warn_at"] else ""
    return Text(f"budget: ${spent:.4f} of ${cap:g} spent ({share:.0%})", style=style)


def _score_lines(scores: dict[str, dict[str, Any]]) -> list[Text]:
    """One line per score: true/false with the rate over decided records, or the mean of
    numbers, and the nulls (a scorer that could not decide, or a failed trial)."""
    lines = []
    for name, c in scores.items():
        parts = []
        if c["true"] or c["false"]:
            rate = c["true"] / (c["true"] + c["false"])
            parts.append(f"{c['true']:,} true, {c['false']:,} false ({rate:.1%})")
        if c["numbers"]:
            parts.append(f"{c['numbers']:,} numbers, mean {c['mean']:.4g}")
        parts.append(f"{c['null']:,} null")
        lines.append(Text.assemble("score ", plain(name, "bold"), ": ", "; ".join(parts)))
    return lines


def _logprob_lines(missing: dict[str, int]) -> list[str]:
    return [
        f"{model}: {count:,} answers came without the logprobs they asked for"
        for model, count in sorted(missing.items())
    ]


def _batch_table(batches: list[dict[str, Any]]) -> Table:
    table = Table(title="batches", title_justify="left")
    for column in ("batch", "provider", "stage", "state", "requests", "counts", "age"):
        table.add_column(column, justify="right" if column in ("stage", "requests") else "left")
    now = time.time()
    for batch in batches:
        counts = ", ".join(f"{k} {v}" for k, v in batch["counts"].items() if v) or "-"
        state = batch["state"]
        if batch["provider_state"] and batch["provider_state"] != state and state != "abandoned":
            state = f"{state} ({batch['provider_state']})"
        table.add_row(
            plain(batch["batch_id"] or batch["tag"]),
            plain(batch["lane"]),
            str(batch["stage"] + 1),
            plain(state),
            f"{batch['requests']:,}",
            plain(counts),
            _age(now - batch["created_unix"]),
        )
    return table


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
