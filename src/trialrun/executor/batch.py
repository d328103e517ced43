"""Batch mode: trials through the providers' batch APIs, one stage per turn.

`collect_pass` is one idempotent step, safe to repeat from cron (the caller holds the
run's lock):

1. reconcile batches written `submitting` whose submission never recorded an id (a
   crash after the provider accepted it): look them up by their tag, else resubmit;
2. poll open batches; for each that ended, store every outcome in one transaction
   (answers fill the response cache; errors are retried in a later batch up to
   `retry.attempts`; expired or cancelled requests are resubmitted);
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
from dataclasses import dataclass, field
from typing import Any

import orjson

from trialrun import secrets
from trialrun.errors import ConfigError
from trialrun.executor.advance import advance
from trialrun.executor.batch_judge import (
    judge_committed,
    judge_label,
    nothing_to_judge,
    ready_label,
    route_of,
)
from trialrun.executor.budget import BUDGET_STOP, Budget, worst_case_usd
from trialrun.executor.trial import (
    ExperimentRun,
    ModelRoute,
    TurnRequest,
    failed_attempt,
    store_answer,
)
from trialrun.providers.base import Provider
from trialrun.providers.batch import BatchOutcome, BatchStatus
from trialrun.store import (
    BATCH_OPEN,
    BatchOutcomeRow,
    OutstandingRequest,
    ReadyRequest,
    utcnow,
)
from trialrun.types import Request


@dataclass
class CollectReport:
    """What one pass did."""

    reconciled: int = 0
    resubmitted: int = 0
    collected: int = 0
    cache_hits: int = 0
    submitted_batches: int = 0
    submitted_requests: int = 0
    open_batches: int = 0
    judge_requests: int = 0
    """Judges' requests out (waiting to be submitted, or in a batch) after the pass."""
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = []
        if self.collected:
            parts.append(f"{self.collected:,} results stored")
        if self.cache_hits:
            parts.append(f"{self.cache_hits:,} answered from the cache")
        if self.submitted_batches:
            parts.append(
                f"{self.submitted_requests:,} requests submitted in {self.submitted_batches} "
                f"batch{'es' if self.submitted_batches > 1 else ''}"
            )
        if self.reconciled:
            parts.append(f"{self.reconciled} lost submissions found")
        if self.resubmitted:
            parts.append(f"{self.resubmitted} requests to resubmit")
        parts.append(f"{self.open_batches} batch{'es' if self.open_batches != 1 else ''} out")
        if self.judge_requests:
            parts.append(
                f"{self.judge_requests:,} judge request{'s' if self.judge_requests > 1 else ''} out"
            )
        return "; ".join(parts)

    @property
    def changed(self) -> bool:
        return bool(self.reconciled or self.collected or self.cache_hits or self.submitted_batches)


def batch_capable(route: ModelRoute) -> bool:
    return route.provider.batch_limits is not None


async def collect_pass(run: ExperimentRun) -> CollectReport:
    check_batch_support({judge_label(j): j.route for j in run.judges}, f"{run.run_id}: judge")
    report = CollectReport()
    await _reconcile(run, report)
    await _poll(run, report)
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
            _unreachable(run, route, "looking up a lost submission", exc, report)
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


# ------------------------------------------------------------------ 2. poll and store


async def _poll(run: ExperimentRun, report: CollectReport) -> None:
    store = run.store
    for batch in store.batches(["open"]):
        route = route_of(run, batch["model"])
        try:
            status = await route.provider.poll_batch(batch["batch_id"])
            if not status.ended:
                store.batch_polled(batch["tag"], status.raw, status.counts)
                run.submit_failures[route.lane] = 0
                continue
            outcomes = []
            if not status.failed:
                outcomes = await route.provider.batch_results(batch["batch_id"])
        except Exception as exc:  # the batch is still there: poll again at the next pass
            _unreachable(run, route, f"polling batch {batch['batch_id']}", exc, report)
            continue
        run.submit_failures[route.lane] = 0
        _store_outcomes(run, route, batch, status, outcomes, report)


def _unreachable(
    run: ExperimentRun, route: ModelRoute, what: str, exc: Exception, report: CollectReport
) -> None:
    kind, _ = route.provider.classify_error(exc)
    message = secrets.redact(str(exc)) or type(exc).__name__
    if kind == "auth":
        run.stopped_lanes.setdefault(route.lane, message)
    note = f"{route.lane}: {what} failed ({message}); tried again at the next collect"
    run.store.add_event("batch_error", note)
    report.notes.append(note)
    _count_failure(run, route, message)


def _count_failure(run: ExperimentRun, route: ModelRoute, message: str) -> None:
    """Calls to a lane's batch API that failed in a row; at `retry.attempts` the lane stops
    with the last error, so `collect --wait` never loops on a provider that is down."""
    failures = run.submit_failures.get(route.lane, 0) + 1
    run.submit_failures[route.lane] = failures
    if failures >= run.experiment.retry.attempts:
        run.stopped_lanes.setdefault(
            route.lane,
            f"{failures} calls to its batch API in a row failed, the last with: {message}",
        )


def _store_outcomes(
    run: ExperimentRun,
    route: ModelRoute,
    batch: dict[str, Any],
    status: BatchStatus,
    outcomes: list[BatchOutcome],
    report: CollectReport,
) -> None:
    rows = run.store.batch_rows(batch["tag"])
    if status.failed:  # nothing ran: every request is an error of this attempt
        failure = secrets.redact(status.note or "the batch failed")
        outcomes = [BatchOutcome(custom_id, error=failure) for custom_id in rows]
    now = utcnow()
    stored: list[BatchOutcomeRow] = []
    for outcome in outcomes:
        row = rows.get(outcome.custom_id)
        if row is None:
            continue  # not ours, or already stored by an earlier pass
        if outcome.unprocessed:
            stored.append(BatchOutcomeRow(outcome.custom_id, "ready", attempts_added=0))
            continue
        stored.append(_outcome_row(run, route, row, outcome, now))
        report.collected += 1
    note = status.note
    if note:
        note = f"batch {batch['batch_id']} ({batch['lane']}) {note}"
        run.store.add_event("batch_note", note)
        report.notes.append(note)
    run.store.end_batch(batch["tag"], status.raw, status.counts, stored, note)
    if run.cache is not None:
        run.cache.flush()


def _outcome_row(
    run: ExperimentRun,
    route: ModelRoute,
    row: OutstandingRequest,
    outcome: BatchOutcome,
    now: str,
) -> BatchOutcomeRow:
    """Log one request's answer or error as an attempt; what becomes of the request: done,
    ready to retry in a later batch (up to `retry.attempts`), or failed."""
    request = TurnRequest(row.trial_id, row.turn, row.cache_key, row.request)
    attempt = row.attempts + 1
    if outcome.response is not None:
        outcome.response.attempts = attempt
        response_json = store_answer(run, route, request, outcome.response, now, batch=True)
        return BatchOutcomeRow(outcome.custom_id, "done", response=response_json)
    message = secrets.redact(outcome.error or "batch request failed")
    run.store.add_attempt(failed_attempt(request, attempt, message, outcome.kind, now))
    if outcome.kind == "retryable" and attempt < run.experiment.retry.attempts:
        return BatchOutcomeRow(outcome.custom_id, "ready", error=message)
    suffix = f" (gave up after {attempt} attempts)" if outcome.kind == "retryable" else ""
    where = f"turn {row.turn + 1}: " if row.turn >= 0 else ""  # a judge's: its judgment says
    error = f"{where}{message}{suffix}"
    return BatchOutcomeRow(outcome.custom_id, "failed", error=error)


# ------------------------------------------------------------------ 4. submit


@dataclass(frozen=True, slots=True)
class Ready:
    """A ready request as `_submit` holds it, with the size of its batch entry in bytes.
    The entry itself is built again only when its chunk is sent, so a stage never holds
    every request as dicts."""

    request: ReadyRequest
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
        groups[key].append(Ready(ready, label, size))
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
    requests = [entry.request for entry in chunk]
    custom_ids = [r.custom_id for r in requests]
    stage = min(r.turn for r in requests)
    if stage < 0:  # a judge's asks: the stage after the trials' last turn
        stage = run.experiment.turn_count()
    store.open_batch(tag, route.lane, label, stage, custom_ids)
    try:
        entries = (
            route.provider.batch_entry(r.custom_id, _request(route, r.request)) for r in requests
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
        _count_failure(run, route, message)
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
