"""Step 2 of a batch-mode pass (`executor/batch.py`): poll the open batches and store
the outcomes of those that ended.

A batch's results are read as the provider yields them (its `batch_results` streams the
results file through a temporary file) and stored `OUTCOME_CHUNK` at a time, each chunk
in one transaction with its attempts, so a pass holds one chunk of a 50,000-request batch,
not all of it. The batch ends (its unanswered requests going out again) once every
outcome is stored; a pass that stops before (a crash, the provider unreachable mid-read)
leaves it open, and the next one reads its results again and stores only the requests
still out, so none is stored or paid for twice. Also here: what a pass reports
(`CollectReport`) and the count of a lane's batch API failures in a row.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from trialrun import secrets
from trialrun.executor.batch_judge import route_of
from trialrun.executor.trial import (
    ExperimentRun,
    ModelRoute,
    TurnRequest,
    failed_attempt,
    store_answer,
)
from trialrun.providers.batch import BatchOutcome, BatchStatus
from trialrun.store import BatchOutcomeRow, OutstandingRequest, utcnow


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


async def poll(run: ExperimentRun, report: CollectReport) -> None:
    store = run.store
    for batch in store.batches(["open"]):
        route = route_of(run, batch["model"])
        try:
            status = await route.provider.poll_batch(batch["batch_id"])
        except Exception as exc:  # the batch is still there: poll again at the next pass
            unreachable(run, route, f"polling batch {batch['batch_id']}", exc, report)
            continue
        if not status.ended:
            store.batch_polled(batch["tag"], status.raw, status.counts)
            run.submit_failures[route.lane] = 0
            continue
        if await _collect(run, route, batch, status, report):
            run.submit_failures[route.lane] = 0


OUTCOME_CHUNK = 1000
"""Outcomes stored per transaction: what a pass holds of a batch's results at once."""


async def _collect(
    run: ExperimentRun,
    route: ModelRoute,
    batch: dict[str, Any],
    status: BatchStatus,
    report: CollectReport,
) -> bool:
    """Store an ended batch's outcomes `OUTCOME_CHUNK` at a time as the provider yields
    them, then end it. Each chunk commits with its attempts; a pass that stops half-way
    (a crash, the provider unreachable mid-read) leaves the batch open, and the next pass
    reads its results again and stores only the requests still out. Returns whether the
    results were read to the end."""
    if status.failed:  # nothing ran: every request is an error of this attempt
        failure = secrets.redact(status.note or "the batch failed")
        ids = run.store.batch_custom_ids(batch["tag"])
        for start in range(0, len(ids), OUTCOME_CHUNK):
            chunk = [BatchOutcome(i, error=failure) for i in ids[start : start + OUTCOME_CHUNK]]
            _store_outcomes(run, route, batch, chunk, report)
    else:
        outcomes = route.provider.batch_results(batch["batch_id"])
        async with contextlib.aclosing(_in_chunks(outcomes, OUTCOME_CHUNK)) as chunks:
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:  # what was stored stays; the rest at the next pass
                    what = f"reading the results of batch {batch['batch_id']}"
                    unreachable(run, route, what, exc, report)
                    return False
                _store_outcomes(run, route, batch, chunk, report)
    _end_batch(run, batch, status, report)
    return True


async def _in_chunks(
    outcomes: AsyncIterator[BatchOutcome], size: int
) -> AsyncGenerator[list[BatchOutcome], None]:
    chunk: list[BatchOutcome] = []
    try:
        async for outcome in outcomes:
            chunk.append(outcome)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    finally:
        if isinstance(outcomes, AsyncGenerator):
            await outcomes.aclose()  # the provider's temporary file, closed now
    if chunk:
        yield chunk


def unreachable(
    run: ExperimentRun, route: ModelRoute, what: str, exc: Exception, report: CollectReport
) -> None:
    kind, _ = route.provider.classify_error(exc)
    message = secrets.redact(str(exc)) or type(exc).__name__
    if kind == "auth":
        run.stopped_lanes.setdefault(route.lane, message)
    note = f"{route.lane}: {what} failed ({message}); tried again at the next collect"
    run.store.add_event("batch_error", note)
    report.notes.append(note)
    count_failure(run, route, message)


def count_failure(run: ExperimentRun, route: ModelRoute, message: str) -> None:
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
    outcomes: list[BatchOutcome],
    report: CollectReport,
) -> None:
    """One chunk of a batch's outcomes, committed with their attempts; answers then go to
    the response cache."""
    rows = run.store.batch_rows(batch["tag"], [outcome.custom_id for outcome in outcomes])
    now = utcnow()
    stored: list[BatchOutcomeRow] = []
    for outcome in outcomes:
        row = rows.pop(outcome.custom_id, None)
        if row is None:
            continue  # not ours, already stored by an earlier pass, or a repeated line
        if outcome.unprocessed:
            stored.append(BatchOutcomeRow(outcome.custom_id, "ready", attempts_added=0))
            continue
        stored.append(_outcome_row(run, route, row, outcome, now))
        report.collected += 1
    run.store.store_batch_outcomes(batch["tag"], stored)
    if run.cache is not None:
        run.cache.flush()


def _end_batch(
    run: ExperimentRun, batch: dict[str, Any], status: BatchStatus, report: CollectReport
) -> None:
    """Mark an ended batch's results stored; its requests it never answered go out again."""
    note = status.note
    if note:
        note = f"batch {batch['batch_id']} ({batch['lane']}) {note}"
        run.store.add_event("batch_note", note)
        report.notes.append(note)
    run.store.end_batch(batch["tag"], status.raw, status.counts, [], note)


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
