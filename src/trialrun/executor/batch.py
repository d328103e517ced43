"""Batch mode: trials through the providers' batch APIs, one stage per turn.

`collect_pass` is one idempotent step, safe to repeat from cron (the caller holds the
run's lock):

1. reconcile batches written `submitting` whose submission never recorded an id (a
   crash after the provider accepted it): look them up by their tag, else resubmit;
2. poll open batches (batch_collect.py); for each that ended, store its outcomes as the
   provider reads them, in chunks each committed with its attempts, then end it (answers
   fill the response cache; errors are retried in a later batch up to `retry.attempts`;
   expired or cancelled requests, and requests it never mentions, are resubmitted);
3. advance (advance.py): each pending trial with nothing out gets the request of its
   next turn, built from the previous turn's request and answer (a cache hit is
   answered at once); trials with every turn answered, or a turn failed, get their record
   (with online judges, after one more stage: batch_judge.py); once no trial is pending,
   records a judge has not judged get its requests the same way;
4. submit the ready requests, grouped per provider client and split by its limits.

A trial moves to its next turn as soon as its previous answer is stored, so a late
request never holds back trials that are ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from trialrun import secrets
from trialrun.errors import ConfigError
from trialrun.executor.advance import advance
from trialrun.executor.batch_collect import (
    CollectReport as CollectReport,  # re-exported: the API and display import it from here
)
from trialrun.executor.batch_collect import count_failure, poll, unreachable
from trialrun.executor.batch_judge import (
    judge_committed,
    judge_label,
    nothing_to_judge,
    ready_label,
    route_of,
)
from trialrun.executor.budget import BUDGET_STOP, Budget, worst_case_usd
from trialrun.executor.trial import ExperimentRun, ModelRoute
from trialrun.providers.base import Provider
from trialrun.store import BATCH_OPEN
from trialrun.types import Request


def batch_capable(route: ModelRoute) -> bool:
    return route.provider.batch_limits is not None


async def collect_pass(run: ExperimentRun) -> CollectReport:
    check_batch_support({judge_label(j): j.route for j in run.judges}, f"{run.run_id}: judge")
    report = CollectReport()
    await _reconcile(run, report)
    await poll(run, report)
    report.cache_hits += advance(run)
    report.cache_hits += judge_committed(run)
    await _submit(run, report)
    run.flush()
    report.open_batches = len(run.store.batches(BATCH_OPEN))
    report.judge_requests = run.store.judge_requests_out()
    return report


# ------------------------------------------------------------------ 1. reconcile


def _metadata(run: ExperimentRun, tag: str) -> dict[str, str]:
    return {"trialrun_run": run.run_id, "trialrun_tag": tag}


async def _reconcile(run: ExperimentRun, report: CollectReport) -> None:
    store = run.store
    for batch in store.batches(["submitting"]):
        route = route_of(run, batch["model"])
        try:
            found = await route.provider.find_batch(
                _metadata(run, batch["tag"]),
                batch["requests"],
                batch["created_unix"] - 600,  # clocks differ; ids already known are skipped
                store.known_batch_ids(),
            )
        except Exception as exc:  # unreachable now: look again at the next pass
            unreachable(run, route, "looking up a lost submission", exc, report)
            continue
        run.submit_failures[route.lane] = 0
        if found is not None:
            store.batch_submitted(batch["tag"], found)
            store.add_event("batch_reconciled", f"{batch['tag']} is {found} at {batch['lane']}")
            report.reconciled += 1
        else:
            moved = store.abandon_batch(batch["tag"], "the provider never received it")
            store.add_event(
                "batch_resubmit",
                f"{batch['tag']}: not at {batch['lane']}; {moved} requests resubmitted",
            )
            report.resubmitted += moved


# ------------------------------------------------------------------ 4. submit


@dataclass(frozen=True, slots=True)
class Ready:
    """A ready request as `_submit` holds it: its id, turn, label and the size of its batch
    entry in bytes. The request is read from the store again, and its entry built, only
    as its chunk is written to the provider, so a stage holds every request's id, never
    every request."""

    custom_id: str
    turn: int
    label: str
    """The model entry's label, or the judge's (`batch_judge.judge_label`)."""
    size: int


async def _submit(run: ExperimentRun, report: CollectReport) -> None:
    groups: dict[tuple[Any, ...], list[Ready]] = defaultdict(list)
    budget = _batch_budget(run)
    held_back = 0
    for ready in run.store.ready_requests():
        label = ready_label(run, ready)
        route = route_of(run, label)
        if route.lane in run.stopped_lanes:
            continue
        request = _request(route, ready.request)
        if budget is not None:
            worst = worst_case_usd(
                route.price,
                request.messages,
                request.params.get("max_tokens"),
                batch=True,
                schema=request.response_schema,
            )
            if not budget.fits(worst):
                held_back += 1
                continue
            budget.reserved += worst
        provider = route.provider
        key = (
            route.lane,
            route.base_url,
            getattr(provider, "api_key", None),
            provider.batch_group(request),
            label if ready.turn < 0 else None,  # a judge's asks go out with its own route
        )
        size = len(orjson.dumps(provider.batch_entry(ready.custom_id, request))) + 1
        groups[key].append(Ready(ready.custom_id, ready.turn, label, size))
    for entries in groups.values():
        label = entries[0].label
        route = route_of(run, label)
        for chunk in _chunks(entries, route.provider, run):
            if route.lane in run.stopped_lanes:
                break
            await _submit_one(run, route, label, chunk, report)
    if budget is not None and held_back:
        _held_back(run, budget, held_back, report)


def _batch_budget(run: ExperimentRun) -> Budget | None:
    """The run's budget as a batch pass sees it: spent = every answer stored so far (batch
    lines at the batch price), reserved = the worst case of every request still out."""
    if run.experiment.budget is None:
        return None
    budget = Budget(run.experiment.budget.max_usd, run.store.total_spend())
    for out in run.store.ready_requests("submitted"):
        route = route_of(run, ready_label(run, out))
        request = _request(route, out.request)
        max_tokens = request.params.get("max_tokens")
        budget.reserved += worst_case_usd(
            route.price, request.messages, max_tokens, batch=True, schema=request.response_schema
        )
    return budget


def _held_back(run: ExperimentRun, budget: Budget, count: int, report: CollectReport) -> None:
    """Requests the budget kept back: they wait for the batches out to settle below their
    worst case; with none out, the budget is reached and the run stops, resumable."""
    note = f"budget: {count:,} requests held back (${budget.spent:.4f} spent"
    if budget.reserved > 0:
        report.notes.append(f"{note}, ${budget.reserved:.4f} reserved by batches out)")
        return
    message = (
        f"budget reached: ${budget.spent:.4f} spent of budget.max_usd ${budget.cap:g}; "
        f"{count:,} requests not submitted"
    )
    run.store.add_event("budget", message)
    report.notes.append(message)
    for lane in [*run.store.lanes(), *(j.route.lane for j in run.judges)]:
        run.stopped_lanes.setdefault(lane, message)
    run.stopped_lanes[BUDGET_STOP] = message


def _request(route: ModelRoute, request_json: str) -> Request:
    """The provider's request of a stored request JSON (a judge's carries its `schema`)."""
    data = orjson.loads(request_json)
    options = {**route.options, **data.get("options", {})}  # a graded mock's `mock_expected`
    return Request(
        data["model"],
        data["messages"],
        data["params"],
        route.base_url,
        options,
        response_schema=data.get("schema"),
    )


def _chunks(entries: list[Ready], provider: Provider, run: ExperimentRun) -> list[list[Ready]]:
    assert provider.batch_limits is not None
    max_requests, max_bytes = provider.batch_limits
    config = run.experiment.batch
    max_requests = min(max_requests, config.max_requests or max_requests)
    max_bytes = min(max_bytes, config.max_bytes or max_bytes)
    chunks: list[list[Ready]] = [[]]
    size = 0
    for entry in entries:
        if chunks[-1] and (len(chunks[-1]) >= max_requests or size + entry.size > max_bytes):
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += entry.size
    return [chunk for chunk in chunks if chunk]


async def _submit_one(
    run: ExperimentRun,
    route: ModelRoute,
    label: str,
    chunk: list[Ready],
    report: CollectReport,
) -> None:
    store = run.store
    tag = f"b{uuid.uuid4().hex[:16]}"
    custom_ids = [entry.custom_id for entry in chunk]
    stage = min(entry.turn for entry in chunk)
    if stage < 0:  # a judge's asks: the stage after the trials' last turn
        stage = run.experiment.turn_count()
    store.open_batch(tag, route.lane, label, stage, custom_ids)
    try:
        entries = (
            route.provider.batch_entry(custom_id, _request(route, request))
            for custom_id, request in store.requests_of(custom_ids)
        )
        batch_id = await route.provider.submit_batch(entries, _metadata(run, tag))
    except Exception as exc:
        kind, _ = route.provider.classify_error(exc)
        message = secrets.redact(str(exc)) or type(exc).__name__
        if _refused(exc):  # the provider answered no: nothing was created
            store.abandon_batch(tag, f"refused: {message}")
            if kind == "auth":
                run.stopped_lanes.setdefault(route.lane, message)
            note = f"{route.lane}: submitting {len(chunk)} requests failed: {message}"
        else:  # it may have been accepted: the next collect looks it up before resubmitting
            note = f"{route.lane}: no answer to a submission of {len(chunk)} requests ({message}); the next collect reconciles it"
        store.add_event("batch_submit_error", note)
        report.notes.append(note)
        count_failure(run, route, message)
        return
    run.submit_failures[route.lane] = 0
    store.batch_submitted(tag, batch_id)
    report.submitted_batches += 1
    report.submitted_requests += len(chunk)


def _refused(exc: BaseException) -> bool:
    """Whether an error is the provider's answer (an HTTP status), not a lost connection."""
    return (
        getattr(exc, "status_code", None) is not None
        or getattr(exc, "status", None) is not None
        or getattr(exc, "code", None) is not None
    )


# ------------------------------------------------------------------ driving passes


def check_batch_support(routes: dict[str, ModelRoute], where: str) -> None:
    for label, route in routes.items():
        if not batch_capable(route):
            raise ConfigError(
                f"{where}: model '{label}' ({route.provider_name}): trialrun has no batch API for "
                "this provider; use mode: realtime, or run this model in another experiment"
            )


async def collect_runs(
    runs: list[ExperimentRun],
    stop: asyncio.Event,
    wait: bool,
    on_pass: Callable[[ExperimentRun, CollectReport], None],
) -> None:
    """One pass over each run, or with `wait` passes until every run is finished, polling
    at `poll_min_s` while things change and backing off to `poll_max_s` while they do not."""
    delays = {id(run): run.experiment.batch.poll_min_s for run in runs}
    active = list(runs)
    while active and not stop.is_set():
        for run in list(active):
            report = await collect_pass(run)
            on_pass(run, report)
            if report.changed and run.on_collected is not None:
                run.on_collected()
            batch = run.experiment.batch
            if report.changed:
                delays[id(run)] = batch.poll_min_s
            else:
                delays[id(run)] = min(delays[id(run)] * 1.5, batch.poll_max_s)
            if _finished(run) or run.stopped_lanes:
                active.remove(run)
        if not wait or not active:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(delays[id(run)] for run in active))


def _finished(run: ExperimentRun) -> bool:
    counts = run.store.counts()
    return counts["pending"] + counts["running"] == 0 and nothing_to_judge(run)


async def leave_batches(run: ExperimentRun) -> list[str]:
    """The run left batch mode: cancel its batches still out (best effort) and leave their
    requests behind; real time redoes them, from the cache where a batch already answered."""
    notes = []
    for batch in run.store.batches(BATCH_OPEN):
        cancelled = ""
        if batch["batch_id"]:
            try:
                await route_of(run, batch["model"]).provider.cancel_batch(batch["batch_id"])
                cancelled = "cancelled at the provider"
            except Exception as exc:  # already ended, or unreachable: it is ignored either way
                cancelled = f"could not be cancelled ({secrets.redact(str(exc))[:120]}), ignored"
        left = run.store.abandon_batch(batch["tag"], "left for real time", requests_to="abandoned")
        name = batch["batch_id"] or batch["tag"]
        notes.append(f"batch {name} ({batch['lane']}, {left} requests) {cancelled or 'ignored'}")
    dropped = run.store.abandon_unsubmitted()
    if dropped:
        notes.append(f"{dropped} requests waiting for a batch will run in real time instead")
    return notes
