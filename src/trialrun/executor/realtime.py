"""The real-time executor: trials run concurrently on asyncio, turns in order within a trial.

Each (experiment, provider) pair is a lane: a feeder pages pending trials out of the
store in plan order and a pool of workers runs them, so memory stays flat however
many trials there are. Limiters and the response cache are shared across every
experiment in the process.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from trialrun import secrets
from trialrun.errors import ProviderError, TrialrunError
from trialrun.executor.budget import BUDGET_STOP, BudgetReached, worst_case_usd
from trialrun.executor.judge import (
    Answer,
    Ask,
    Judge,
    apply_verdicts,
    judge_context,
    judge_trial,
)
from trialrun.executor.limits import Limiter, estimate_tokens
from trialrun.executor.retry import backoff_s
from trialrun.executor.task import run_task
from trialrun.executor.trial import (
    ExperimentRun,
    ModelRoute,
    TrialResult,
    TurnRequest,
    build_request,
    cached_response,
    failed_attempt,
    followup_messages,
    last_user,
    log_cache_hit,
    make_record,
    request_options,
    store_answer,
    store_record,
    template_context,
    trial_params,
)
from trialrun.store import PendingTrial, ToJudge, utcnow
from trialrun.types import Request, Response

NOTABLE_WAIT_S = 5.0
"""A Retry-After wait at least this long is an event and shows on the progress line."""
Item = TypeVar("Item")
FLUSH_EVERY_S = 0.25
PAGE = 500


class LaneStopped(Exception):
    """A provider refused our credentials: every trial of its lane stops."""


class Limiters:
    """One limiter per provider name, created on first use and shared by all experiments."""

    def __init__(self) -> None:
        self._by_lane: dict[str, Limiter] = {}

    def get(self, route: ModelRoute, run: ExperimentRun) -> Limiter:
        """The limiter of `route`'s lane (a model's or a judge's: one provider, one limiter).
        A lane the mock answers under --mock takes the mock's limits, not the real ones
        (`limits.openai.rpm` would only slow a dry run); it is keyed apart from a real lane."""
        lane = route.lane
        mocked = lane != "mock" and route.provider_name == "mock"
        key = f"{lane} (--mock)" if mocked else lane
        if key not in self._by_lane:
            config = None if mocked else run.experiment.limits.get(lane)
            self._by_lane[key] = Limiter(config, route.provider.max_concurrency())
        return self._by_lane[key]


async def execute(runs: list[ExperimentRun], stop: asyncio.Event) -> None:
    """Run every pending trial of every run; returns when all are finished or `stop` is set."""
    limiters = Limiters()
    lanes = []
    for run in runs:
        for lane in run.store.lanes():
            route = next(r for r in run.routes.values() if r.lane == lane)
            lanes.append(_run_lane(run, lane, limiters, route, stop))
    flusher = asyncio.create_task(_flush_periodically(runs))
    try:
        await asyncio.gather(*lanes)
        for run in runs:
            run.flush()  # the records the judges below look for are committed
        # What is left to judge: `when: after` judges, and records an online judge missed
        # (committed before a crash, or before the judge was added).
        await asyncio.gather(
            *(
                judge_pending(run, limiters, stop)
                for run in runs
                if run.judges and not stop.is_set()
            )
        )
    finally:
        flusher.cancel()
        for run in runs:
            run.flush()


async def _flush_periodically(runs: list[ExperimentRun]) -> None:
    while True:
        await asyncio.sleep(FLUSH_EVERY_S)
        for run in runs:
            if time.monotonic() - run.last_flush >= FLUSH_EVERY_S:
                run.flush()


async def _run_lane(
    run: ExperimentRun, lane: str, limiters: Limiters, route: ModelRoute, stop: asyncio.Event
) -> None:
    rng = random.Random()

    async def run_one(trial: PendingTrial) -> None:
        await _run_trial(run, trial, limiters, rng)
        run.maybe_flush()

    async with route.provider.lane(route.config.model_id):  # a local model: resident now
        await _pool(
            lambda after: run.store.claim_pending(lane, after, PAGE),
            lambda trial: trial.seq,
            run_one,
            limiters.get(route, run).concurrency,
            lambda: not stop.is_set() and lane not in run.stopped_lanes,
        )


async def _pool(
    page: Callable[[int], Sequence[Item]],
    seq: Callable[[Item], int],
    handle: Callable[[Item], Awaitable[None]],
    workers: int,
    going: Callable[[], bool],
) -> None:
    """`workers` coroutines handle what `page(after_seq)` pages out of the store in plan
    order, through a bounded queue (memory stays flat however many there are), while
    `going()` holds."""
    queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=workers * 2)

    async def feed() -> None:
        after = -1
        while going():
            rows = page(after)
            if not rows:
                break
            for row in rows:
                await queue.put(row)
            after = seq(rows[-1])
        for _ in range(workers):
            await queue.put(None)

    async def work() -> None:
        while (row := await queue.get()) is not None:
            # A get from a full queue does not suspend, and a trial that fails before its
            # first call (a template over its budget) never awaits: yield once a row, so
            # a signal's handler (and cancellation) can run between rows.
            await asyncio.sleep(0)
            if going():
                await handle(row)

    await asyncio.gather(feed(), *(work() for _ in range(workers)))


# ------------------------------------------------------------------ one trial


async def _run_trial(
    run: ExperimentRun, trial: PendingTrial, limiters: Limiters, rng: random.Random
) -> None:
    params = trial_params(run, trial)
    context = template_context(trial)
    started_at, clock = utcnow(), time.perf_counter()
    try:
        if run.task is not None:
            result, history = await _task_turns(run, trial, params, context, limiters, rng)
        else:
            result, history = await _turns(run, trial, params, context, limiters, rng)
    except LaneStopped:
        return
    record = make_record(run, trial, params, result, started_at, clock)
    judges = run.online_judges()
    if judges and result.error is None:
        # Judged before it commits: the record and its judgments are written together, so
        # a crash before then leaves the trial pending, and its resume is answered from the
        # stored attempts (the trial's and the judge's), paying for nothing twice.
        context = judge_context(run, record, history)
        try:
            rows = await asyncio.gather(
                *(
                    judge_trial(j, trial.trial_id, context, _asker(run, limiters, rng))
                    for j in judges
                )
            )
        except LaneStopped:
            return
        for row in rows:
            run.store.add_judgment(row)
            run.count_judgment(row.judge, row.state == "done")
        apply_verdicts(record, run.judges, rows)
    store_record(run, trial, record)


async def _turns(
    run: ExperimentRun,
    trial: PendingTrial,
    params: dict[str, Any],
    context: dict[str, Any],
    limiters: Limiters,
    rng: random.Random,
) -> tuple[TrialResult, list[dict[str, str]]]:
    """The config's turns in order: (the result, each turn's `{user, response}`)."""
    route = run.routes[trial.model]
    limiter = limiters.get(route, run)
    result = TrialResult()
    history: list[dict[str, str]] = []
    try:
        options = request_options(route, context)
        messages = run.conversation.first_messages(context)
        for turn in range(run.experiment.turn_count()):
            if turn:
                messages = followup_messages(run, context, messages, turn, history)
            request = build_request(route, trial, turn, messages, params, options)
            outcome = await _call(run, route, request, messages, params, limiter, rng)
            result.retries += max(outcome.attempts - 1, 0)
            if outcome.response is None:
                result.error = outcome.error
                break
            result.turns.append(outcome.response.to_json())
            history = [*history, {"user": last_user(messages), "response": outcome.response.text}]
            messages = [*messages, {"role": "assistant", "content": outcome.response.text}]
    except TrialrunError as exc:
        result.error = str(exc)
    return result, history


async def _task_turns(
    run: ExperimentRun,
    trial: PendingTrial,
    params: dict[str, Any],
    context: dict[str, Any],
    limiters: Limiters,
    rng: random.Random,
) -> tuple[TrialResult, list[dict[str, str]]]:
    """The `task:` function as the trial (executor/task.py), its calls sent as `_call`s;
    a lane stopped under it (auth, budget, gate) leaves the trial pending."""
    stopped: list[str] = []

    async def send(
        route: ModelRoute,
        request: TurnRequest,
        messages: list[dict[str, str]],
        sent: dict[str, Any],
    ) -> tuple[Response | None, str | None, int]:
        try:
            outcome = await _call(
                run, route, request, messages, sent, limiters.get(route, run), rng
            )
        except LaneStopped as exc:
            stopped.append(str(exc))
            raise
        return outcome.response, outcome.error, outcome.attempts

    try:
        done = await run_task(run, trial, params, context, send)
    except TrialrunError as exc:  # the config's messages failed to render for this item
        return TrialResult(error=str(exc)), []
    if stopped:
        raise LaneStopped(stopped[0])
    return done.result, done.history


def _asker(run: ExperimentRun, limiters: Limiters, rng: random.Random) -> Ask:
    """A judge's asks in real time: the same call as a trial's (cache, limits, retries)."""

    async def ask(judge: Judge, request: TurnRequest, messages: list[dict[str, str]]) -> Answer:
        limiter = limiters.get(judge.route, run)
        schema = judge.response_schema
        outcome = await _call(
            run, judge.route, request, messages, judge.params, limiter, rng, schema=schema
        )
        return Answer(outcome.response, outcome.error, outcome.attempts)

    return ask


async def judge_pending(
    run: ExperimentRun,
    limiters: Limiters,
    stop: asyncio.Event,
    judges: list[Judge] | None = None,
    *,
    failed_only: bool = False,
) -> None:
    """Judge the committed, done records that `judges` (by default the run's) have not
    judged yet, or with `failed_only` those they failed on; each record is rewritten with
    its verdicts in the transaction that commits its judgments."""
    judges = run.judges if judges is None else judges
    if not judges:
        return
    pairs = [(j.name, j.spec_hash) for j in judges]
    ask = _asker(run, limiters, random.Random())

    async def judge_one(row: ToJudge) -> None:
        states = run.store.judgment_states(row.trial_id)
        todo = [j for j in judges if _needs(states.get((j.name, j.spec_hash)), failed_only)]
        record = orjson.loads(row.record)
        context = judge_context(run, record)
        try:
            rows = await asyncio.gather(*(judge_trial(j, row.trial_id, context, ask) for j in todo))
        except LaneStopped:
            return
        for judgment in rows:
            run.store.add_judgment(judgment)
            run.count_judgment(judgment.judge, judgment.state == "done")
        apply_verdicts(record, run.judges, rows)
        run.store.patch_record(row.trial_id, orjson.dumps(record).decode())
        run.maybe_flush()
        if run.on_judged is not None:
            run.on_judged(1)

    await _pool(
        lambda after: run.store.to_judge(
            pairs, failed_only=failed_only, after_seq=after, limit=PAGE
        ),
        lambda row: row.seq,
        judge_one,
        max(limiters.get(j.route, run).concurrency for j in judges),
        lambda: not stop.is_set() and not any(j.route.lane in run.stopped_lanes for j in judges),
    )
    run.flush()


def _needs(state: str | None, failed_only: bool) -> bool:
    return state == "failed" if failed_only else state is None


@dataclass(slots=True)
class _Outcome:
    response: Response | None
    error: str | None
    attempts: int


class _Failed(Exception):
    """A call that raised, with how long it took (from when it got its limiter slot)."""

    def __init__(self, error: Exception, latency_s: float) -> None:
        super().__init__(error)
        self.error, self.latency_s = error, latency_s


async def _call(
    run: ExperimentRun,
    route: ModelRoute,
    request: TurnRequest,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    limiter: Limiter,
    rng: random.Random,
    *,
    schema: dict[str, Any] | None = None,
) -> _Outcome:
    """One request with cache, limits and retries; a cache hit counts zero attempts.

    `params` are those sent, and the cache key is built from them (see executor/cache.py);
    `schema` is a judge's verdict schema, sent as structured output."""
    response = cached_response(run, request.key)
    if response is not None:
        log_cache_hit(run, request, response)
        return _Outcome(response, None, 0)
    call = Request(
        route.config.model_id,
        messages,
        params,
        route.base_url,
        request.options,
        response_schema=schema,
    )
    estimate = estimate_tokens(messages, params.get("max_tokens"), route.provider.count_tokens)
    for attempt in range(1, run.experiment.retry.attempts + 1):
        started_at = utcnow()
        reserved = [0.0]
        try:
            response = await _send(run, route, call, limiter, estimate, reserved)
        except _Failed as failed:
            if run.budget is not None:  # a call that got no answer is not billed
                run.budget.settle(reserved[0], 0.0)
            verdict = _retry_or_fail(run, route, request, attempt, failed, started_at, limiter, rng)
            if isinstance(verdict, _Outcome):
                return verdict
            await asyncio.sleep(verdict)
            continue
        response.attempts = attempt
        limiter.settle(estimate, response.usage.total)
        store_answer(run, route, request, response, started_at)
        if run.budget is not None:
            run.budget.settle(reserved[0], response.cost_usd)
        return _Outcome(response, None, attempt)
    raise AssertionError("unreachable: the loop returns on its last attempt")


async def _send(
    run: ExperimentRun,
    route: ModelRoute,
    call: Request,
    limiter: Limiter,
    estimate: int,
    reserved: list[float],
) -> Response:
    """One call to the provider in a limiter slot, timed from when the slot was got; any
    error but a stopped lane comes back as `_Failed`. Under a budget, the call's worst-case
    cost is reserved first (into `reserved[0]`, for the caller to settle)."""
    clock = time.perf_counter()
    try:
        async with limiter.slot(estimate):
            if route.lane in run.stopped_lanes:  # stopped while this call waited its turn
                raise LaneStopped(route.lane)
            if run.budget is not None:
                worst = worst_case_usd(
                    route.price,
                    call.messages,
                    call.params.get("max_tokens"),
                    schema=call.response_schema,
                )
                try:
                    await run.budget.reserve(worst)
                except BudgetReached as exc:
                    _stop_run(run, str(exc))
                reserved[0] = worst
            clock = time.perf_counter()
            run.in_flight[route.lane] = run.in_flight.get(route.lane, 0) + 1
            try:
                response = await asyncio.wait_for(
                    route.provider.generate(call), run.experiment.retry.timeout_s
                )
            finally:
                run.in_flight[route.lane] -= 1
    except LaneStopped:
        raise
    except Exception as exc:  # classified by the caller; unknown ones become final errors
        raise _Failed(exc, time.perf_counter() - clock) from exc
    response.latency_s = time.perf_counter() - clock
    return response


def _retry_or_fail(
    run: ExperimentRun,
    route: ModelRoute,
    request: TurnRequest,
    attempt: int,
    failed: _Failed,
    started_at: str,
    limiter: Limiter,
    rng: random.Random,
) -> _Outcome | float:
    """Log a failed attempt; the turn's final outcome, or the seconds to wait before the
    next attempt. An auth error stops the whole lane."""
    kind, retry_after = route.provider.classify_error(failed.error)
    message = _describe(failed.error)
    attempt_row = failed_attempt(request, attempt, message, kind, started_at, failed.latency_s)
    run.store.add_attempt(attempt_row)
    if kind == "auth":
        _stop_lane(run, route, message)
    where = f"turn {request.turn + 1}: " if request.turn >= 0 else ""
    if kind != "retryable":
        return _Outcome(None, f"{where}{message}", attempt)
    retry = run.experiment.retry
    if attempt == retry.attempts:
        gave_up = f"{where}{message} (gave up after {attempt} attempts)"
        return _Outcome(None, gave_up, attempt)
    if retry_after is not None:
        retry_after = _server_wait(run, route, limiter, retry_after)
    return backoff_s(attempt, retry.base_wait_s, retry.max_wait_s, retry_after, rng)


def _server_wait(run: ExperimentRun, route: ModelRoute, limiter: Limiter, asked_s: float) -> float:
    """Honour a server's Retry-After up to `retry.max_wait_s`: the whole lane cools down,
    and a wait long enough to notice is an event and a note on the progress line, so a run
    never sits silent (a server may ask for an hour, or for `inf`)."""
    cap = run.experiment.retry.max_wait_s
    wait = min(asked_s, cap)
    already = run.waiting.get(route.lane, 0.0) > time.time()
    if limiter.cool_down(wait) and not already and (wait >= NOTABLE_WAIT_S or asked_s > cap):
        capped = (
            f" (asked {_seconds(asked_s)}; capped at retry.max_wait_s)" if asked_s > cap else ""
        )
        note = f"{route.lane}: server asked to wait (Retry-After); waiting {wait:.0f} s{capped}"
        run.store.add_event("retry_after", note)
        run.waiting[route.lane] = time.time() + wait
        if run.on_wait is not None:
            run.on_wait(route.lane, wait, note)
    return wait


def _seconds(value: float) -> str:
    return "forever" if value == float("inf") else f"{value:.0f} s"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "request timed out"
    return secrets.redact(str(exc)) or type(exc).__name__


def _stop_run(run: ExperimentRun, message: str) -> None:
    """The budget is reached: every lane of the run stops, its trials left pending."""
    if BUDGET_STOP not in run.stopped_lanes:
        run.stopped_lanes[BUDGET_STOP] = message
        run.store.add_event("budget", message)
    for lane in [*run.store.lanes(), *(j.route.lane for j in run.judges)]:
        run.stopped_lanes.setdefault(lane, message)
    raise LaneStopped(BUDGET_STOP)


def _stop_lane(run: ExperimentRun, route: ModelRoute, message: str) -> None:
    if route.lane not in run.stopped_lanes:
        run.stopped_lanes[route.lane] = message
        run.store.add_event("lane_stopped", f"{route.lane}: {message}")
    raise LaneStopped(route.lane)


__all__ = ["LaneStopped", "Limiters", "ProviderError", "execute", "judge_pending"]
