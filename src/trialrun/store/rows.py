"""Rows as values: what goes into the store and what comes out, named field by field.

Each class is one row (or one query's row) of a table, so a caller reads `row.turn`,
never `row[1]`, and a new column is one new field, not a shifted index in every caller.
They are built once a call on the hot path, so they are plain slotted dataclasses: a
frozen one costs ~7x more to build (object.__setattr__ per field; 2.1 vs 0.3 µs for the
14-field `Attempt`, measured), and nothing changes a row after it is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class PendingTrial:
    """A trial row as the executor needs it."""

    seq: int
    trial_id: str
    item_id: str
    item: dict[str, Any]
    model: str
    grid: dict[str, Any]
    repeat: int
    seed: int


@dataclass(slots=True)
class Attempt:
    """One call of a trial's turn (or its answer from the cache, attempt 0): an `attempts` row."""

    trial_id: str
    turn: int
    attempt: int
    cache_key: str | None
    request: str
    """The request's canonical JSON: model, messages and params as sent."""
    response: str | None
    """The answer's canonical JSON; None when the call failed."""
    error: str | None = None
    error_kind: str | None = None
    latency_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    cache_hit: bool = False
    started_at: str = ""

    def row(self) -> tuple[Any, ...]:
        """The values in the table's column order."""
        return (
            self.trial_id,
            self.turn,
            self.attempt,
            self.cache_key,
            self.request,
            self.response,
            self.error,
            self.error_kind,
            self.latency_s,
            self.input_tokens,
            self.output_tokens,
            self.cost_usd,
            int(self.cache_hit),
            self.started_at,
        )


@dataclass(slots=True)
class RecordRow:
    """A trial's finished record with the columns `summary` groups by: a `records` row."""

    trial_id: str
    seq: int
    status: str
    model: str
    grid: str
    """The grid cell's canonical JSON."""
    tokens: int
    latency_s: float
    cost_usd: float | None
    finished_at: str
    record: str
    """The record's JSON, as `records` and results.jsonl hold it."""

    def row(self) -> tuple[Any, ...]:
        """The values in the table's column order."""
        return (
            self.trial_id,
            self.seq,
            self.status,
            self.model,
            self.grid,
            self.tokens,
            self.latency_s,
            self.cost_usd,
            self.finished_at,
            self.record,
        )


# ------------------------------------------------------------------ batch mode


@dataclass(slots=True)
class BatchRequest:
    """The request of one turn of a trial in batch mode: a `batch_requests` row as written."""

    trial_id: str
    turn: int
    custom_id: str
    lane: str
    state: str
    """`ready`, or `done` (answered from the cache) or `failed` (it could not be built)."""
    cache_key: str
    request: str
    response: str | None = None
    attempts: int = 0
    error: str | None = None

    def row(self) -> tuple[Any, ...]:
        """The values in the order `add_batch_requests` inserts them."""
        return (
            self.trial_id,
            self.turn,
            self.custom_id,
            self.lane,
            self.state,
            self.cache_key,
            self.request,
            self.response,
            self.attempts,
            self.error,
        )


@dataclass(slots=True)
class BatchOutcomeRow:
    """What became of one request of an ended batch."""

    custom_id: str
    state: str
    """`done`, `failed`, or `ready` to be submitted again."""
    response: str | None = None
    error: str | None = None
    attempts_added: int = 1


@dataclass(slots=True)
class OutstandingRequest:
    """A request still out in a batch, as its outcome is stored against it."""

    custom_id: str
    trial_id: str
    turn: int
    attempts: int
    cache_key: str
    request: str


@dataclass(slots=True)
class ReadyRequest:
    """A request ready to submit, with the label of the model entry that sends it."""

    custom_id: str
    model: str
    turn: int
    request: str


@dataclass(slots=True)
class TrialProgress:
    """A pending trial with no request out, and how far its turns have gone."""

    trial: PendingTrial
    lane: str
    done_turns: int
    failed_turns: int


@dataclass(slots=True)
class AnsweredTurn:
    """A trial's turn with its answer: the request and response JSON it was built from."""

    turn: int
    request: str
    response: str


@dataclass(slots=True)
class TurnOutcome:
    """What one turn of a batch trial came to: its answer, or its error, after `attempts`."""

    response: str | None
    error: str | None
    attempts: int


# ------------------------------------------------------------------ judges


@dataclass(slots=True)
class JudgmentRow:
    """One judge's outcome for one trial: a `judgments` row. Exactly one of `verdict` (the
    validated verdict's JSON, `state` 'done') or `error` (why there is none, `state`
    'failed') is set; usage, cost and latency add up every ask of the judge."""

    trial_id: str
    judge: str
    spec_hash: str
    state: str
    verdict: str | None
    error: str | None
    error_kind: str | None
    raw: str | None
    """The judge's last reply text, as it came back."""
    request: str
    """Canonical JSON of the last request sent."""
    response: str | None
    """The last `Response.to_json()` as JSON."""
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    latency_s: float
    attempts: int
    """Calls made for this judgment (every ask, retries included; cache hits count 0)."""
    asks: int
    """Times the judge was asked: 1, plus one per re-ask after an invalid verdict."""
    cache_hit: bool
    started_at: str
    finished_at: str

    def row(self) -> tuple[Any, ...]:
        """The values in the table's column order."""
        return (
            self.trial_id,
            self.judge,
            self.spec_hash,
            self.state,
            self.verdict,
            self.error,
            self.error_kind,
            self.raw,
            self.request,
            self.response,
            self.input_tokens,
            self.output_tokens,
            self.cost_usd,
            self.latency_s,
            self.attempts,
            self.asks,
            int(self.cache_hit),
            self.started_at,
            self.finished_at,
        )


@dataclass(slots=True)
class ToJudge:
    """A committed, done record a judge has yet to judge (or, re-judging, failed on)."""

    seq: int
    trial_id: str
    record: str
