"""`trialrun plan`."""

from __future__ import annotations

import json

import click
from rich import box
from rich.console import Console
from rich.table import Table

from trialrun import api
from trialrun.cli.common import LoadOptions, load_options, split_args, stdout
from trialrun.cli.preparing import print_warnings, trial_progress
from trialrun.display import visible
from trialrun.estimate import (
    BATCH_TYPICAL_H,
    Estimate,
    GpuTime,
    ModelEstimate,
    Preview,
    WallTime,
    duration_text,
    estimate,
    gpu_time,
    preview,
    wall_time,
)
from trialrun.routing import KeyNeed


@click.command("plan", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, required=True, metavar="CONFIG... [KEY=VALUE ...]")
@load_options(
    mock="Plan as `run --mock` would (mock models cost 0).",
    multirun="Plan each combination of comma-separated values.",
    shard="Count only shard I of N.",
    limit="Count only the first N trials.",
)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    metavar="S",
    help="Seconds a call takes, for the real-time duration (default: 2 s; the mock's own).",
)
@click.option(
    "--gpu-s-per-trial",
    type=click.FloatRange(min=0),
    metavar="S",
    help="Local (hf/) models: GPU seconds a trial takes (time a pilot), for GPU hours and cost.",
)
@click.option(
    "--gpu",
    default="H100",
    show_default=True,
    help="The GPU pricing local trials: A100, H100, H200 or L40S (rough on-demand prices).",
)
@click.option(
    "--gpu-price",
    type=click.FloatRange(min=0),
    metavar="USD",
    help="Your GPU's price per hour, instead of the rough table's.",
)
@click.option(
    "--show",
    type=click.IntRange(min=1),
    metavar="N",
    help="Print the first N requests as they would be sent (messages and params).",
)
def command(
    args: tuple[str, ...],
    load: LoadOptions,
    latency: float | None,
    gpu_s_per_trial: float | None,
    gpu: str,
    gpu_price: float | None,
    show: int | None,
) -> None:
    """Show what a config would run (items, cells, trials, requests), its tokens and cost;
    sends nothing and needs no API key."""
    configs, overrides = split_args(args)
    prepared = api.load_many(configs, overrides, need_keys=False, **load)
    print_warnings(prepared)
    console = stdout()
    with trial_progress(prepared, "counting"):
        console.print(_counts_table(prepared))
    for p in prepared:
        result = estimate(p)
        _print_estimate(console, p.experiment.name, result, p.experiment.mode == "batch")
        console.print(_duration_line(wall_time(p, result, latency)), markup=False, soft_wrap=True)
        gpu_line = _gpu_line(gpu_time(result, gpu_s_per_trial, gpu, gpu_price))
        if gpu_line:
            console.print(gpu_line, markup=False, soft_wrap=True)
        _print_keys(console, p.models.keys)
        if show:
            for number, request in enumerate(preview(p, show), 1):
                _print_request(console, number, request)


def _counts_table(prepared: list[api.Prepared]) -> Table:
    table = Table(title="plan", title_justify="left")
    columns = ("experiment", "items", "models", "cells", "repeats", "turns", "trials", "requests")
    for column in columns:
        table.add_column(column, justify="left" if column == "experiment" else "right")
    for p in prepared:
        s = api.plan_summary(p)
        table.add_row(
            s["name"],
            f"{s['items']:,}",
            str(len(s["models"])),
            f"{s['cells']:,}",
            f"{s['repeats']:,}",
            str(s["turns"]),
            f"{s['trials']:,}",
            f"{s['requests']:,}",
        )
    return table


def _print_estimate(console: Console, name: str, result: Estimate, batch_mode: bool) -> None:
    """Per model: tokens, and cost at real-time and batch prices (the mode's own marked)."""
    table = Table(title=f"{name}: estimate", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("model")
    for column in ("requests", "input tokens", "output tokens ≤"):
        table.add_column(column, justify="right")
    realtime, batch = "cost real-time", "cost batch"
    table.add_column(realtime + ("" if batch_mode else " *"), justify="right")
    table.add_column(batch + (" *" if batch_mode else ""), justify="right")
    for m in result.models:
        table.add_row(
            m.label,
            f"{m.requests:,}",
            f"{m.input_tokens:,}",
            f"{m.output_tokens:,}",
            _usd(m, batch=False),
            _usd(m, batch=True),
        )
    unpriced = " + unpriced" if result.unpriced else ""
    total_rt, total_batch = result.total(), result.total(batch=True)
    table.add_row("total", "", "", "", _money(total_rt) + unpriced, _money(total_batch) + unpriced)
    console.print(table)
    for line in _estimate_notes(result, batch_mode):
        console.print(line, markup=False, soft_wrap=True)


def _duration_line(t: WallTime) -> str:
    """Real time against batch mode, so a long protocol's many batch rounds show."""
    realtime = (
        f"about {duration_text(t.realtime_s)} in real time (bound by {t.bound_by}"
        + (f" on {t.lane}" if t.lane != "-" else "")
        + f", {t.latency_s:g} s a call)"
    )
    rounds = f"{t.stages} stage{'s' if t.stages != 1 else ''}"
    batch = (
        f"batch mode: {rounds} x ~{BATCH_TYPICAL_H:g} h typical = ~"
        f"{duration_text(t.batch_typical_h * 3600)} (up to {duration_text(t.batch_worst_h * 3600)}"
        " at the providers' 24 h a stage)"
    )
    if not t.batchable:
        batch = "batch mode: not for local models"
    return f"duration: {realtime}; {batch}"


def _gpu_line(t: GpuTime | None) -> str | None:
    """Local models' GPU hours and cost, or how to get them."""
    if t is None:
        return None
    if t.hours is None:
        return (
            f"GPU time: {t.trials:,} local trials; give --gpu-s-per-trial S (time a pilot: "
            "run with --limit 20 and read the records' elapsed_s) for GPU hours and cost"
        )
    price = (
        f"${t.usd:,.2f} at ${t.usd_per_hour:g}/h on {t.gpu} (a rough on-demand price; "
        "--gpu-price for yours)"
        if t.usd is not None
        else f"no price for {t.gpu} (give --gpu-price USD)"
    )
    return (
        f"GPU time: {t.trials:,} local trials x {t.seconds_per_trial:g} s = "
        f"{t.hours:,.2f} GPU h, {price}"
    )


def _usd(m: ModelEstimate, *, batch: bool) -> str:
    cost = m.cost(batch=batch)
    if m.local:
        return "GPU time"
    if m.free:
        return "$0 (mock)"
    return "no price" if cost is None else _money(cost)


def _money(usd: float) -> str:
    """Cents for real sums, two significant digits for a test's fractions of a cent."""
    return f"${usd:,.2f}" if usd >= 0.1 or usd == 0 else f"${usd:.2g}"


def _estimate_notes(result: Estimate, batch_mode: bool) -> list[str]:
    sampled = (
        f"{result.sampled:,} of {result.items:,} items rendered, scaled up"
        if result.sampled < result.items
        else f"all {result.items:,} item{'s' if result.items > 1 else ''} rendered"
    )
    counted = (
        "the provider's tokenizer"
        if all(m.tokenizer for m in result.models)
        else "~4 characters a token where a provider has no offline tokenizer"
    )
    notes = [
        f"tokens are an estimate ({sampled}; {counted}); output is max_tokens per request, "
        f"an upper bound; * marks this config's mode ({'batch' if batch_mode else 'realtime'})"
    ]
    if any(m.judge for m in result.models):
        notes.append(
            "a judge asks once per trial (every trial assumed done; re-asks after an invalid "
            "verdict not counted), its input the prompt plus the graded answer at max_tokens"
        )
    unbounded = [m.label for m in result.models if not m.bounded]
    if unbounded:
        notes.append(
            f"no max_tokens for {', '.join(unbounded)}: their output is not bounded and "
            "not counted; set params.max_tokens"
        )
    if result.unpriced:
        notes.append(
            f"no price known for {', '.join(result.unpriced)}: not in the total (add them "
            "under `prices:` in the config)"
        )
    return notes


def _print_keys(console: Console, keys: list[KeyNeed]) -> None:
    """The keys a real run reads: set ones by name only, missing ones with what to do."""
    seen: dict[tuple[str, ...], bool] = {}
    for need in keys:
        seen[need.names] = need.present
    if not seen:
        return
    ready = [" or ".join(names) for names, present in seen.items() if present]
    missing = [" or ".join(names) for names, present in seen.items() if not present]
    line = "keys a real run needs: " + ", ".join(
        [f"{name} (set)" for name in ready] + [f"{name} (NOT SET)" for name in missing]
    )
    console.print(line, markup=False, soft_wrap=True)
    if missing:
        console.print(
            f"export {', '.join(missing)} before `trialrun run` (or dry-run with --mock)",
            markup=False,
            soft_wrap=True,
        )


def _print_request(console: Console, number: int, request: Preview) -> None:
    cell = ", ".join(f"{k}={v}" for k, v in request.grid.items()) or "no grid"
    console.print(
        f"\nrequest {number}: {request.model} ({cell}, repeat {request.repeat}) {request.trial_id}",
        markup=False,
        soft_wrap=True,
        style="bold",
    )
    console.print(f"  model: {request.model_id}", markup=False, soft_wrap=True)
    console.print(
        f"  params: {json.dumps(request.params, ensure_ascii=False)}", markup=False, soft_wrap=True
    )
    if request.error is not None:
        console.print(f"  cannot render: {request.error}", markup=False, soft_wrap=True)
    for message in request.messages or []:
        # Outside text (items, templates): escapes spelled out, but its lines kept as lines.
        content = "\n    ".join(visible(line) for line in message["content"].split("\n"))
        console.print(f"  [{message['role']}] {content}", markup=False, soft_wrap=True)
    for turn, source in enumerate(request.followups, 2):
        console.print(
            f"  turn {turn} [user] template (rendered with the answers before it): {source}",
            markup=False,
            soft_wrap=True,
        )
