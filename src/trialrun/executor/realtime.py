"""The real-time executor: trials run concurrently on asyncio, turns in order within a trial.

Each (experiment, provider) pair is a lane: a feeder pages pending trials out of the
store in plan order and a pool of workers runs them, so memory stays flat however
many trials there are. Limiters and the response cache are shared across every
experiment in the process.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from trialrun import secrets
from trialrun.config import SAMPLING_PARAMS, Experiment, ModelConfig
from trialrun.errors import ProviderError, TrialrunError
from trialrun.executor.cache import ResponseCache, cache_key
from trialrun.executor.limits import Limiter, estimate_tokens
from trialrun.executor.retry import backoff_s
from trialrun.hashing import canonical
from trialrun.pricing import Price
from trialrun.providers.base import Provider
from trialrun.store import PendingTrial, Store, utcnow
from trialrun.templates import Conversation
from trialrun.types import Request, Response

NOTABLE_WAIT_S = 5.0
"""A Retry-After wait at least this long is an event and shows on the progress line."""
FLUSH_ROWS = 2000
FLUSH_EVERY_S = 0.25
PAGE = 500


class LaneStopped(Exception):
    """A provider refused our credentials: every trial of its lane stops."""


@dataclass
class ModelRoute:
    """How one model entry's requests are made."""

    config: ModelConfig
    provider: Provider
    provider_name: str
    """The provider that answers (`mock` under --mock)."""
    lane: str
    """The configured provider name: limits and lanes are keyed by it."""
    base_url: str | None
    options: dict[str, Any]
    price: Price | None = None
    """Price of the configured model; None leaves real costs unknown (mock answers cost 0)."""
    unsent: frozenset[str] = frozenset()
    """Sampling params this provider cannot take: left out of requests and records."""


@dataclass
class ExperimentRun:
    """Everything the executor needs to run one run folder's pending trials."""

    run_id: str
    experiment: Experiment
    store: Store
    conversation: Conversation
    routes: dict[str, ModelRoute]
    cache: ResponseCache | None
    id_field: str
    on_commit: Callable[[list[tuple[str, str]]], None]
    reuse_attempts: bool = False
    mode: str = "realtime"
    switched: bool = False
    """The mode changed on this resume (requests left in batches are to be dealt with)."""
    stopped_lanes: dict[str, str] = field(default_factory=dict)
    submit_failures: dict[str, int] = field(default_factory=dict)
    """Batch mode: failed calls to each lane's batch API in a row, in this process."""
    in_flight: dict[str, int] = field(default_factory=dict)
    """Requests of each lane waiting on the provider right now (shown by `status`)."""
    waiting: dict[str, float] = field(default_factory=dict)
    """Until when (Unix time) each lane cools down after a server's Retry-After."""
    on_wait: Callable[[str, float, str], None] | None = None
    """Told (lane, seconds, note) when a lane starts a wait long enough to notice."""
    on_warn: Callable[[str], None] | None = None
    """Told what a user should know while the run goes (once per cause)."""
    missing_logprobs: dict[str, int] = field(default_factory=dict)
    """Turns per model that asked for logprobs and got none, in this process."""
    _last_flush: float = field(default_factory=time.monotonic)

    def live(self) -> dict[str, Any]:
        """What a running process is doing now, for `status` in another process."""
        now = time.time()
        return {
            "in_flight": sum(self.in_flight.values()),
            "waiting": {k: round(v - now, 1) for k, v in self.waiting.items() if v > now},
            "at": now,
        }

    def note_missing_logprobs(self, model: str, turns: int) -> None:
        """Logprobs were asked for and did not come back: warn once per model."""
        if model not in self.missing_logprobs:
            note = (
                f"{model}: logprobs were asked for (logprobs/top_logprobs) but the server "
                "returned none; records keep logprobs: null (`trialrun status` counts them)"
            )
            self.store.add_event("logprobs_missing", note)
            if self.on_warn is not None:
                self.on_warn(note)
        self.missing_logprobs[model] = self.missing_logprobs.get(model, 0) + turns

    def flush(self) -> None:
        committed = self.store.flush(live=self.live())
        self._last_flush = time.monotonic()
        if self.cache is not None:
            try:
                self.cache.flush()
            except sqlite3.Error as exc:  # the cache is an optimisation; the store is the truth
                self.store.add_event("cache_error", str(exc))
        if committed:
            self.on_commit(committed)

    def maybe_flush(self) -> None:
        if self.store.buffered() >= FLUSH_ROWS:
            self.flush()


class Limiters:
    """One limiter per provider name, created on first use and shared by all experiments."""

    def __init__(self) -> None:
        self._by_lane: dict[str, Limiter] = {}

    def get(self, lane: str, run: ExperimentRun, default_concurrency: int) -> Limiter:
        """A lane the mock answers under --mock takes the mock's limits, not the real ones
        (`limits.openai.rpm` would only slow a dry run); it is keyed apart from a real lane."""
        mocked = lane != "mock" and any(
            r.lane == lane and r.provider_name == "mock" for r in run.routes.values()
        )
        key = f"{lane} (--mock)" if mocked else lane
        if key not in self._by_lane:
            config = None if mocked else run.experiment.limits.get(lane)
            self._by_lane[key] = Limiter(config, default_concurrency)
        return self._by_lane[key]


async def execute(runs: list[ExperimentRun], stop: asyncio.Event) -> None:
    """Run every pending trial of every run; returns when all are finished or `stop` is set."""
    limiters = Limiters()
    lanes = []
    for run in runs:
        for lane in run.store.lanes():
            route = next(r for r in run.routes.values() if r.lane == lane)
            limiter = limiters.get(lane, run, route.provider.max_concurrency())
            lanes.append(_run_lane(run, lane, limiter, stop))
    flusher = asyncio.create_task(_flush_periodically(runs))
    try:
        await asyncio.gather(*lanes)
    finally:
        flusher.cancel()
        for run in runs:
            run.flush()


async def _flush_periodically(runs: list[ExperimentRun]) -> None:
    while True:
        await asyncio.sleep(FLUSH_EVERY_S)
        for run in runs:
            if time.monotonic() - run._last_flush >= FLUSH_EVERY_S:
                run.flush()


async def _run_lane(run: ExperimentRun, lane: str, limiter: Limiter, stop: asyncio.Event) -> None:
    workers = limiter.concurrency
    queue: asyncio.Queue[PendingTrial | None] = asyncio.Queue(maxsize=workers * 2)

    async def feed() -> None:
        after = -1
        while not stop.is_set() and lane not in run.stopped_lanes:
            page = run.store.claim_pending(lane, after, PAGE)
            if not page:
                break
            for trial in page:
                await queue.put(trial)
            after = page[-1].seq
        for _ in range(workers):
            await queue.put(None)

    async def work() -> None:
        rng = random.Random()
        while (trial := await queue.get()) is not None:
            # A get from a full queue does not suspend, and a trial that fails before its
            # first call (a template over its budget) never awaits: yield once a trial, so
            # a signal's handler (and cancellation) can run between trials.
            await asyncio.sleep(0)
            if lane in run.stopped_lanes or stop.is_set():
                continue
            await _run_trial(run, trial, limiter, rng)
            run.maybe_flush()

    await asyncio.gather(feed(), *(work() for _ in range(workers)))


# ------------------------------------------------------------------ one trial


async def _run_trial(
    run: ExperimentRun, trial: PendingTrial, limiter: Limiter, rng: random.Random
) -> None:
    route = run.routes[trial.model]
    experiment = run.experiment
    item = trial.item
    params = sent_params(route, _params(experiment, route.config, trial))
    context = template_context(trial)
    started_at, clock = utcnow(), time.perf_counter()
    turns: list[dict[str, Any]] = []
    history: list[dict[str, str]] = []
    error: str | None = None
    retries = 0
    try:
        messages = run.conversation.first_messages(context)
        for turn in range(experiment.turn_count()):
            if turn:
                context["turn"], context["turns"] = turn + 1, history
                messages = [*messages, run.conversation.followup(turn - 1, context)]
            outcome = await _call(
                run, route, trial, turn, messages, params, limiter, rng
            )
            retries += max(outcome.attempts - 1, 0)
            if outcome.response is None:
                error = outcome.error
                break
            turns.append(outcome.response.to_json())
            history = [*history, {"user": _last_user(messages), "response": outcome.response.text}]
            messages = [*messages, {"role": "assistant", "content": outcome.response.text}]
    except LaneStopped:
        return
    except TrialrunError as exc:
        error = str(exc)
    _commit(run, trial, item, params, turns, error, retries, started_at, clock)


def template_context(trial: PendingTrial) -> dict[str, Any]:
    """What a trial's templates see at its first turn (`turn`, `turns` advance later)."""
    return {
        "item": trial.item,
        "grid": trial.grid,
        **trial.grid,
        "model": trial.model,
        "repeat": trial.repeat,
        "seed": trial.seed,
        "turn": 1,
        "turns": [],
    }


def _params(experiment: Experiment, config: ModelConfig, trial: PendingTrial) -> dict[str, Any]:
    grid_params = {k: v for k, v in trial.grid.items() if k in SAMPLING_PARAMS}
    return {**experiment.params, **config.params, **grid_params, "seed": trial.seed}


def _last_user(messages: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


@dataclass(slots=True)
class _Outcome:
    response: Response | None
    error: str | None
    attempts: int


async def _call(
    run: ExperimentRun,
    route: ModelRoute,
    trial: PendingTrial,
    turn: int,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    limiter: Limiter,
    rng: random.Random,
) -> _Outcome:
    """One request with cache, limits and retries; a cache hit counts zero attempts.

    `params` are those sent, and the cache key is built from them (see executor/cache.py).
    """
    model_id = route.config.model_id
    key = request_key(route, messages, params, trial.repeat, turn)
    request_json = canonical({"model": model_id, "messages": messages, "params": params})
    response = cached_response(run, key)
    if response is not None:
        _log_attempt(run, trial, turn, 0, key, request_json, response, None, None, utcnow())
        return _Outcome(response, None, 0)
    request = Request(model_id, messages, params, route.base_url, route.options)
    retry = run.experiment.retry
    estimate = estimate_tokens(messages, params.get("max_tokens"), route.provider.count_tokens)
    for attempt in range(1, retry.attempts + 1):
        started_at, clock = utcnow(), time.perf_counter()
        try:
            async with limiter.slot(estimate):
                if route.lane in run.stopped_lanes:  # stopped while this call waited its turn
                    raise LaneStopped(route.lane)
                clock = time.perf_counter()
                run.in_flight[route.lane] = run.in_flight.get(route.lane, 0) + 1
                try:
                    response = await asyncio.wait_for(
                        route.provider.generate(request), retry.timeout_s
                    )
                finally:
                    run.in_flight[route.lane] -= 1
        except LaneStopped:
            raise
        except Exception as exc:  # classified below; unknown ones become final trial errors
            kind, retry_after = route.provider.classify_error(exc)
            message = _describe(exc)
            _log_attempt(
                run,
                trial,
                turn,
                attempt,
                key,
                request_json,
                None,
                message,
                kind,
                started_at,
                time.perf_counter() - clock,
            )
            if kind == "auth":
                _stop_lane(run, route, message)
            if kind != "retryable":
                return _Outcome(None, f"turn {turn + 1}: {message}", attempt)
            if attempt == retry.attempts:
                return _Outcome(
                    None, f"turn {turn + 1}: {message} (gave up after {attempt} attempts)", attempt
                )
            if retry_after is not None:
                retry_after = _server_wait(run, route, limiter, retry_after)
            await asyncio.sleep(
                backoff_s(attempt, retry.base_wait_s, retry.max_wait_s, retry_after, rng)
            )
            continue
        response.latency_s, response.attempts = time.perf_counter() - clock, attempt
        if response.cost_usd is None and route.price is not None:
            response.cost_usd = route.price.cost(response.usage)
        limiter.settle(estimate, response.usage.total)
        _log_attempt(run, trial, turn, attempt, key, request_json, response, None, None, started_at)
        if run.cache is not None:
            run.cache.put(key, canonical(response.to_json()))
        return _Outcome(response, None, attempt)
    raise AssertionError("unreachable: the loop returns on its last attempt")


def _server_wait(
    run: ExperimentRun, route: ModelRoute, limiter: Limiter, asked_s: float
) -> float:
    """Honour a server's Retry-After up to `retry.max_wait_s`: the whole lane cools down,
    and a wait long enough to notice is an event and a note on the progress line, so a run
    never sits silent (a server may ask for an hour, or for `inf`)."""
    cap = run.experiment.retry.max_wait_s
    wait = min(asked_s, cap)
    already = run.waiting.get(route.lane, 0.0) > time.time()
    if limiter.cool_down(wait) and not already and (wait >= NOTABLE_WAIT_S or asked_s > cap):
        capped = f" (asked {_seconds(asked_s)}; capped at retry.max_wait_s)" if asked_s > cap else ""
        note = f"{route.lane}: server asked to wait (Retry-After); waiting {wait:.0f} s{capped}"
        run.store.add_event("retry_after", note)
        run.waiting[route.lane] = time.time() + wait
        if run.on_wait is not None:
            run.on_wait(route.lane, wait, note)
    return wait


def _seconds(value: float) -> str:
    return "forever" if value == float("inf") else f"{value:.0f} s"


def cached_response(run: ExperimentRun, key: str) -> Response | None:
    """The answer this run's store or the response cache holds for `key`, marked as a free,
    zero-attempt cache hit; None if neither has it."""
    cached = _lookup(run, key)
    if cached is None:
        return None
    response = Response.from_json(orjson.loads(cached))
    response.cache_hit, response.attempts, response.latency_s, response.cost_usd = (
        True,
        0,
        0.0,
        0.0,
    )
    return response


def request_key(
    route: ModelRoute,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    repeat: int,
    turn: int,
) -> str:
    """The cache key of a request as `route` sends it (`params`: the sent ones)."""
    return cache_key(
        route.provider_name,
        route.config.model_id,
        route.base_url,
        route.options,
        messages,
        params,
        repeat,
        turn,
    )


def sent_params(route: ModelRoute, requested: dict[str, Any]) -> dict[str, Any]:
    """The requested params less those the route's provider cannot take."""
    return {k: v for k, v in requested.items() if k not in route.unsent}


def _lookup(run: ExperimentRun, key: str) -> str | None:
    if run.reuse_attempts:
        stored = run.store.stored_response(key)
        if stored is not None:
            return stored
    return run.cache.get(key) if run.cache is not None else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "request timed out"
    return secrets.redact(str(exc)) or type(exc).__name__


def _stop_lane(run: ExperimentRun, route: ModelRoute, message: str) -> None:
    if route.lane not in run.stopped_lanes:
        run.stopped_lanes[route.lane] = message
        run.store.add_event("lane_stopped", f"{route.lane}: {message}")
    raise LaneStopped(route.lane)


def _log_attempt(
    run: ExperimentRun,
    trial: PendingTrial,
    turn: int,
    attempt: int,
    key: str,
    request_json: str,
    response: Response | None,
    error: str | None,
    error_kind: str | None,
    started_at: str,
    latency_s: float | None = None,
) -> None:
    run.store.add_attempt(
        trial.trial_id,
        turn,
        attempt,
        key,
        request_json,
        canonical(response.to_json()) if response else None,
        error,
        error_kind,
        response.latency_s if response else latency_s,
        response.usage.input if response else None,
        response.usage.output if response else None,
        response.cost_usd if response else None,
        bool(response and response.cache_hit),
        started_at,
    )


def trial_cost(route: ModelRoute, turns: list[dict[str, Any]]) -> float | None:
    """What a trial cost: the sum of its answered turns, or None (unknown) when a turn's cost
    is unknown, the model has no price, or no turn was answered (a failed call reports no
    usage, so nothing says what it cost: unknown, never $0). Mock answers cost 0."""
    costs = [t["cost_usd"] for t in turns]
    if route.provider_name == "mock":
        return float(sum(c or 0.0 for c in costs))
    if not costs or None in costs or route.price is None:
        return None
    return float(sum(costs))


def _commit(
    run: ExperimentRun,
    trial: PendingTrial,
    item: dict[str, Any],
    params: dict[str, Any],
    turns: list[dict[str, Any]],
    error: str | None,
    retries: int,
    started_at: str,
    clock: float,
) -> None:
    finished_at = utcnow()
    status = "failed" if error else "done"
    cost = trial_cost(run.routes[trial.model], turns)
    if params.get("top_logprobs") or params.get("logprobs"):
        missing = sum(1 for t in turns if t["logprobs"] is None)
        if missing:
            run.note_missing_logprobs(trial.model, missing)
    record = {
        "run_id": run.run_id,
        "trial_id": trial.trial_id,
        "item_id": trial.item_id,
        "item": {k: v for k, v in item.items() if k != run.id_field},
        "model": trial.model,
        "grid": trial.grid,
        "repeat": trial.repeat,
        "seed": trial.seed,
        "status": status,
        "turns": turns,
        "params": params,
        "output": None,
        "judge": None,
        "judge_error": None,
        "error": error,
        "started_at": started_at,
        "finished_at": finished_at,
        "elapsed_s": round(time.perf_counter() - clock, 6),
        "retries": retries,
        "cost_usd": cost,
    }
    tokens = sum(t["usage"]["total"] for t in turns)
    latency = sum(t["latency_s"] for t in turns)
    run.store.add_record(
        trial.trial_id,
        trial.seq,
        status,
        trial.model,
        canonical(trial.grid),
        tokens,
        latency,
        cost,
        finished_at,
        orjson.dumps(record).decode(),
    )


__all__ = ["ExperimentRun", "LaneStopped", "ModelRoute", "ProviderError", "execute"]
