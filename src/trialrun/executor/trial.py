"""One trial path: the steps of a trial that do not depend on how a request reaches its
provider, shared by the real-time executor (realtime.py) and batch mode (batch.py).

A trial goes through the same steps in either executor:

1. `trial_params`: the params requested (experiment, model entry, grid, seed), less those
   the route's provider cannot take: what is sent and recorded;
2. `template_context` and `followup_messages`: what the templates see, turn by turn;
3. `build_request`: a turn's cache key and canonical request JSON;
4. `cached_response`: the answer this run's store or the response cache already holds;
5. otherwise the executor sends the request its own way (one call with retries, or a
   line of a batch) and hands the answer to `store_answer` (cost, attempt row, cache)
   or a failure to `failed_attempt`;
6. `commit_record`: the trial's record, committed with its state at the next flush.

A later stage of a trial (an LLM judge, a scorer, a local model) is one more user of
these steps, not a third copy: it builds its messages from the record, takes its key and
JSON from `build_request`, asks `cached_response` first, sends through either executor's
transport, and logs through `store_answer`/`failed_attempt`, so caching, costs and the
attempts table work for it unchanged.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from trialrun import __version__
from trialrun.config import SAMPLING_PARAMS, Experiment, ModelConfig
from trialrun.executor.cache import ResponseCache, cache_key
from trialrun.hashing import canonical
from trialrun.integrity import canaries_in
from trialrun.pricing import Price
from trialrun.providers.base import Provider
from trialrun.scoring import Scorers
from trialrun.store import Attempt, PendingTrial, RecordRow, Store, utcnow
from trialrun.templates import Conversation, Template
from trialrun.types import Response

if TYPE_CHECKING:
    from trialrun.executor.budget import Budget
    from trialrun.executor.judge import Judge
    from trialrun.gates import Gates

GATE_STOP = "gate"
"""The key under which a run's `stopped_lanes` says a gate fired."""
FLUSH_ROWS = 2000
"""Buffered rows that make a flush due at once, without waiting for the flush timer."""


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
    mock_answer: Template | None = None
    """A mock route's right answer (`mock.answer`, or the entry's `options.answer`): rendered
    for each trial and handed to the mock as the option `mock_expected`."""


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
    on_collected: Callable[[], None] | None = None
    """Told after a batch-mode collect pass that changed the run (the syncer snapshots it)."""
    missing_logprobs: dict[str, int] = field(default_factory=dict)
    """Turns per model that asked for logprobs and got none, in this process."""
    last_flush: float = field(default_factory=time.monotonic)
    scorers: Scorers | None = None
    """The config's `scores:`, run on each record as it is built."""
    judges: list[Judge] = field(default_factory=list)
    """The config's LLM judges (executor/judge.py), the first one primary."""
    judged: dict[str, list[int]] = field(default_factory=dict)
    """Judgments made in this process per judge name: [verdicts, errors]."""
    budget: Budget | None = None
    """The run's `budget:` (executor/budget.py): spend, reservations, the cap."""
    gates: Gates | None = None
    """The run's `gates:` (gates.py), fed each record as it commits."""
    on_judged: Callable[[int], None] | None = None
    """Told how many committed records a judging pass has just judged (`trialrun judge`)."""
    config_hash: str | None = None
    """The run's config hash (meta `hashes.config`), written into every record."""
    task: Callable[..., Any] | None = None
    """The config's `task:` function, imported (executor/task.py runs it as the trial)."""

    def online_judges(self) -> list[Judge]:
        return [j for j in self.judges if j.config.when == "online"]

    def count_judgment(self, judge: str, done: bool) -> None:
        tally = self.judged.setdefault(judge, [0, 0])
        tally[0 if done else 1] += 1

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
        self.last_flush = time.monotonic()
        if self.cache is not None:
            try:
                self.cache.flush()
            except sqlite3.Error as exc:  # the cache is an optimisation; the store is the truth
                self.store.add_event("cache_error", str(exc))
        if committed:
            self.on_commit(committed)
            if self.gates:
                for _, record in committed:
                    self.gates.add(orjson.loads(record))
                self.check_gates()

    def check_gates(self) -> None:
        """A gate that fires stops every lane of the run (its trials stay pending)."""
        if self.gates is None or GATE_STOP in self.stopped_lanes:
            return
        fired = self.gates.check()
        if fired is None:
            return
        message = fired.message()
        self.stopped_lanes[GATE_STOP] = message
        self.store.add_event(f"gate_{fired.action}", message)
        self.store.set_meta(
            {"gate": {"name": fired.gate, "action": fired.action, "message": message}}
        )
        for lane in [*self.store.lanes(), *(j.route.lane for j in self.judges)]:
            self.stopped_lanes.setdefault(lane, message)
        if self.on_warn is not None:
            self.on_warn(message)

    def maybe_flush(self) -> None:
        if self.store.buffered() >= FLUSH_ROWS:
            self.flush()


# ------------------------------------------------------------------ params and templates


def requested_params(
    experiment: Experiment, config: ModelConfig, trial: PendingTrial
) -> dict[str, Any]:
    """The params a trial asks for: the experiment's, the model entry's, the grid's sampling
    params and its seed, later ones winning."""
    grid_params = {k: v for k, v in trial.grid.items() if k in SAMPLING_PARAMS}
    return {**experiment.params, **config.params, **grid_params, "seed": trial.seed}


def sent_params(route: ModelRoute, requested: dict[str, Any]) -> dict[str, Any]:
    """The requested params less those the route's provider cannot take."""
    return {k: v for k, v in requested.items() if k not in route.unsent}


def trial_params(run: ExperimentRun, trial: PendingTrial) -> dict[str, Any]:
    """The params a trial sends and records."""
    route = run.routes[trial.model]
    return sent_params(route, requested_params(run.experiment, route.config, trial))


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


def request_options(route: ModelRoute, context: dict[str, Any]) -> dict[str, Any]:
    """The options of a trial's requests: the route's, plus for a mock with an answer
    template the trial's rendered right answer as `mock_expected`. Like every option it
    enters the cache key (two items with one prompt but different answers are different
    requests to a graded mock) and the request JSON, where batch mode finds it again; for
    any other route the options, and so the keys, are the route's as before."""
    if route.mock_answer is None:
        return route.options
    return {**route.options, "mock_expected": route.mock_answer.render(context)}


def last_user(messages: list[dict[str, str]]) -> str:
    """The last user message's text: what an answer in the history replied to."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def followup_messages(
    run: ExperimentRun,
    context: dict[str, Any],
    messages: list[dict[str, str]],
    turn: int,
    history: list[dict[str, str]],
) -> list[dict[str, str]]:
    """The messages of turn `turn` (1 or later): those so far, answers included, and the
    rendered follow-up, whose template sees the turn number and the history so far."""
    context["turn"], context["turns"] = turn + 1, history
    return [*messages, run.conversation.followup(turn - 1, context)]


# ------------------------------------------------------------------ requests and answers


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One turn's request as it is keyed and logged."""

    trial_id: str
    turn: int
    key: str
    """The cache key (see executor/cache.py)."""
    json: str
    """Canonical JSON of the model id, messages and params as sent (and `options`, when
    they differ from the route's: a graded mock's `mock_expected`)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The provider options of this request (see `request_options`)."""


def build_request(
    route: ModelRoute,
    trial: PendingTrial,
    turn: int,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    options: dict[str, Any] | None = None,
) -> TurnRequest:
    """Key and JSON of a turn's request as `route` sends it (`params`: the sent ones;
    `options`: `request_options`, by default the route's)."""
    model_id = route.config.model_id
    options = route.options if options is None else options
    key = cache_key(
        route.provider_name,
        model_id,
        route.base_url,
        options,
        messages,
        params,
        trial.repeat,
        turn,
    )
    body: dict[str, Any] = {"model": model_id, "messages": messages, "params": params}
    if options is not route.options:
        body["options"] = {k: v for k, v in options.items() if k == "mock_expected"}
    return TurnRequest(trial.trial_id, turn, key, canonical(body), options)


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


def _lookup(run: ExperimentRun, key: str) -> str | None:
    if run.reuse_attempts:
        stored = run.store.stored_response(key)
        if stored is not None:
            return stored
    return run.cache.get(key) if run.cache is not None else None


def attempt_row(
    request: TurnRequest,
    attempt: int,
    started_at: str,
    response: Response | None,
    response_json: str | None = None,
    latency_s: float | None = None,
) -> Attempt:
    """The attempts row of an answer (attempt 0: an answer from the cache) or, with no
    response, of a call that got none (`failed_attempt` adds its error)."""
    return Attempt(
        request.trial_id,
        request.turn,
        attempt,
        request.key,
        request.json,
        response_json,
        latency_s=latency_s,
        input_tokens=response.usage.input if response else None,
        output_tokens=response.usage.output if response else None,
        cost_usd=response.cost_usd if response else None,
        cache_hit=response.cache_hit if response else False,
        started_at=started_at,
    )


def failed_attempt(
    request: TurnRequest,
    attempt: int,
    error: str,
    error_kind: str | None,
    started_at: str,
    latency_s: float | None = None,
) -> Attempt:
    """The attempts row of a call that got no answer."""
    row = attempt_row(request, attempt, started_at, None, latency_s=latency_s)
    return dataclasses.replace(row, error=error, error_kind=error_kind)


def log_cache_hit(run: ExperimentRun, request: TurnRequest, response: Response) -> str:
    """Log an answer from the cache as attempt 0; returns its JSON."""
    response_json = canonical(response.to_json())
    row = attempt_row(request, 0, utcnow(), response, response_json, response.latency_s)
    run.store.add_attempt(row)
    return response_json


def store_answer(
    run: ExperimentRun,
    route: ModelRoute,
    request: TurnRequest,
    response: Response,
    started_at: str,
    *,
    batch: bool = False,
) -> str:
    """A provider's answer: priced if the provider did not say, logged as an attempt (with
    its latency in real time; a batch line has none) and put in the response cache.
    Returns its JSON."""
    if response.cost_usd is None and route.price is not None:
        response.cost_usd = route.price.cost(response.usage, batch=batch)
    response_json = canonical(response.to_json())
    latency = None if batch else response.latency_s
    row = attempt_row(request, response.attempts, started_at, response, response_json, latency)
    run.store.add_attempt(row)
    if run.cache is not None:
        run.cache.put(request.key, response_json)
    return response_json


# ------------------------------------------------------------------ the record


@dataclass(slots=True)
class TrialResult:
    """What a trial's turns came to, as the record holds it."""

    turns: list[dict[str, Any]] = field(default_factory=list)
    """Each answered turn's `Response.to_json()`, in order."""
    error: str | None = None
    """Why the trial failed; None when every turn was answered."""
    retries: int = 0
    output: dict[str, Any] | None = None
    """What a custom trial's function returned (executor/task.py); None for other trials."""


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


def commit_record(
    run: ExperimentRun,
    trial: PendingTrial,
    params: dict[str, Any],
    result: TrialResult,
    started_at: str,
    clock: float,
) -> None:
    """Buffer a finished trial's record; its state changes with it at the next flush.

    `clock` is the `time.perf_counter()` at which the trial started."""
    store_record(run, trial, make_record(run, trial, params, result, started_at, clock))


def make_record(
    run: ExperimentRun,
    trial: PendingTrial,
    params: dict[str, Any],
    result: TrialResult,
    started_at: str,
    clock: float,
) -> dict[str, Any]:
    """A finished trial's record, scored, its judges' fields still empty (null: not judged
    yet); `store_record` buffers it. `clock`: `time.perf_counter()` at the trial's start."""
    status = "failed" if result.error else "done"
    cost = trial_cost(run.routes[trial.model], result.turns)
    if params.get("top_logprobs") or params.get("logprobs"):
        missing = sum(1 for t in result.turns if t["logprobs"] is None)
        if missing:
            run.note_missing_logprobs(trial.model, missing)
    record = _record(run, trial, params, result, status, cost)
    if run.scorers:
        record["scores"], record["score_errors"] = run.scorers.score(record)
    for judge in run.judges:
        record["judges"][judge.name] = record["judge_errors"][judge.name] = None
    record["started_at"], record["finished_at"] = started_at, utcnow()
    record["elapsed_s"] = round(time.perf_counter() - clock, 6)
    return record


def store_record(run: ExperimentRun, trial: PendingTrial, record: dict[str, Any]) -> None:
    """Buffer a record (with the judgments that fill its verdicts, added by the caller to
    the same buffer): the trial's state changes with it at the next flush."""
    turns = record["turns"]
    run.store.add_record(
        RecordRow(
            trial.trial_id,
            trial.seq,
            record["status"],
            trial.model,
            canonical(trial.grid),
            sum(t["usage"]["total"] for t in turns),
            sum(t["latency_s"] for t in turns),
            record["cost_usd"],
            record["finished_at"],
            orjson.dumps(record).decode(),
        )
    )


def _record(
    run: ExperimentRun,
    trial: PendingTrial,
    params: dict[str, Any],
    result: TrialResult,
    status: str,
    cost: float | None,
) -> dict[str, Any]:
    """The record's fields in their published order; the timing fields are placeholders
    `commit_record` fills."""
    return {
        "run_id": run.run_id,
        "trial_id": trial.trial_id,
        "item_id": trial.item_id,
        "item": {k: v for k, v in trial.item.items() if k != run.id_field},
        "model": trial.model,
        "grid": trial.grid,
        "repeat": trial.repeat,
        "seed": trial.seed,
        "status": status,
        "turns": result.turns,
        "params": params,
        "output": result.output,
        "scores": {},
        "score_errors": {},
        "judge": None,
        "judge_error": None,
        "judges": {},
        "judge_errors": {},
        "error": result.error,
        "started_at": None,
        "finished_at": None,
        "elapsed_s": None,
        "retries": result.retries,
        "cost_usd": cost,
        "canaries": canaries_in(
            (t["response"] for t in result.turns), run.experiment.integrity.canaries
        ),
        "trialrun_version": __version__,
        "config_hash": run.config_hash,
    }
