"""Custom trials: `task: package.module:function` runs a user's function as the trial.

- **The function** is sync or async and takes one argument, a `TaskContext`: the item, the
  grid values, seed, repeat, the entry's label (`model`), its params, the first turn's
  rendered `messages`, and `await ctx.generate(messages, model=None, **params)`. An async
  function runs on the executor's event loop (keep heavy CPU work out of it); a sync one
  runs in a worker thread and calls the context's coroutines through `ctx.wait(...)`.
- **Calls are turns.** Each `generate` is one call through the executor's own path
  (cache, limiter, retries, budget, attempts table): the k-th call is turn k-1 of the
  trial, so its cache key and attempt rows are those of any turn and a resumed trial gets
  its earlier calls answered from the store. A call may go to another model of the
  experiment by its label. Each becomes one of the record's turns, in order, with two
  more keys: `model` (the label called) and `user` (the last user message it sent), which
  a judge's `turns` show.
- **Output.** The function returns a dict (JSON-serialisable; numpy values are
  converted), kept as the record's `output`; scores and judges then run on the record
  (a judge's prompt reads `output`, a function scorer gets the record). Anything else
  fails the trial with a clear error; an exception in the function fails the trial with
  its traceback (secrets redacted, the last `MAX_TRACEBACK` characters) as `error`, and
  the run goes on. A call that fails after its retries raises `GenerationFailed`: the
  function may catch it; uncaught, the trial fails with the call's error.
- **Local models.** For an `hf/` entry, `ctx.hf_model` and `ctx.tokenizer` are the loaded
  model and tokenizer (to read; every forward pass of a task goes through
  `await ctx.exclusive(fn)`, which runs `fn(loaded)` on the model's thread with no batch
  running, so a steering hook never reaches another trial's batch). `ctx.concept_vector`
  and `ctx.generate_steered` wrap trialrun.local.steering for the common case; a steered
  generation is not a turn (it is not cached: a resumed trial runs it again).
"""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from trialrun import secrets
from trialrun.errors import TrialrunError
from trialrun.executor.trial import (
    ExperimentRun,
    ModelRoute,
    TrialResult,
    TurnRequest,
    build_request,
    last_user,
    request_options,
    requested_params,
    sent_params,
)
from trialrun.store import PendingTrial
from trialrun.types import Response
from trialrun.user_code import import_function

T = TypeVar("T")
MAX_TRACEBACK = 4000
"""The most characters of a failed task's traceback kept in the record's `error`."""

Send = Callable[
    [ModelRoute, TurnRequest, list[dict[str, str]], dict[str, Any]],
    Awaitable[tuple[Response | None, str | None, int]],
]
"""How the executor makes one call: (route, request, messages, params) -> (response, error,
attempts), with its cache, limits, retries and budget."""
TaskFunction = Callable[["TaskContext"], Any]


class GenerationFailed(TrialrunError):
    """A task's call got no answer after its retries; uncaught, it fails the trial."""


def load_task(path: str, source: str = "") -> TaskFunction:
    """The function `task:` names, imported now (a bad path: one ConfigError line)."""
    prefix = f"{source}: " if source else ""
    return import_function(path, f"{prefix}task", source)


@dataclass
class _Calls:
    """What a task trial's calls came to: the record's turns and the judge's history."""

    turns: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, str]] = field(default_factory=list)
    retries: int = 0


@dataclass
class TaskContext:
    """What a task function gets: the trial's facts and its way to call models."""

    item: dict[str, Any]
    grid: dict[str, Any]
    seed: int
    repeat: int
    model: str
    """The label of the trial's model entry (`ctx.generate` calls it by default)."""
    params: dict[str, Any]
    """The params the trial's model is sent (experiment, entry, grid, seed)."""
    messages: list[dict[str, str]]
    """The config's `messages`, rendered for this trial (a task may send them, or not)."""
    trial_id: str
    _run: ExperimentRun = field(repr=False)
    _trial: PendingTrial = field(repr=False)
    _send: Send = field(repr=False)
    _calls: _Calls = field(repr=False, default_factory=_Calls)
    _loop: asyncio.AbstractEventLoop | None = field(repr=False, default=None)

    async def generate(
        self, messages: Sequence[dict[str, str]], model: str | None = None, **params: Any
    ) -> Response:
        """One call (the trial's next turn) to `model` (a label; the trial's by default)
        with the entry's params updated by `params`; raises `GenerationFailed`."""
        route = self._route(model)
        sent = list(messages)
        wanted = {**self._params(route), **params}
        call_params = sent_params(route, wanted)
        turn = len(self._calls.turns)
        context = {"item": self.item, **self.grid, "grid": self.grid, "model": self.model}
        options = request_options(route, context)
        request = build_request(route, self._trial, turn, sent, call_params, options)
        response, error, attempts = await self._send(route, request, sent, call_params)
        self._calls.retries += max(attempts - 1, 0)
        if response is None:
            raise GenerationFailed(f"call {turn + 1} ({route.config.label}): {error}")
        user = last_user(sent)
        self._calls.turns.append({**response.to_json(), "model": route.config.label, "user": user})
        self._calls.history.append({"user": user, "response": response.text})
        return response

    def wait(self, awaitable: Coroutine[Any, Any, T]) -> T:
        """From a sync task (its worker thread): run a context coroutine and return its
        result, e.g. `ctx.wait(ctx.generate(messages))`."""
        if self._loop is None or _in_event_loop():
            awaitable.close()
            raise TrialrunError("ctx.wait is for sync task functions; an async one awaits")
        return asyncio.run_coroutine_threadsafe(awaitable, self._loop).result()

    # -- local models ----------------------------------------------------------------------

    @property
    def hf_model(self) -> Any:
        """The trial's loaded `hf/` model (read it; run it through `exclusive`)."""
        return self._loaded().model

    @property
    def tokenizer(self) -> Any:
        """The trial's loaded `hf/` tokenizer."""
        return self._loaded().tokenizer

    async def exclusive(self, fn: Callable[[Any], T], model: str | None = None) -> T:
        """`fn(loaded)` (a `trialrun.local.models.LoadedModel`) on the local model's thread
        with no batch running: the place for forward passes with hooks."""
        route = self._route(model)
        result: T = await _hf_provider(route).run_exclusive(route.config.model_id, fn)
        return result

    async def concept_vector(
        self,
        positive: Sequence[str],
        negative: Sequence[str],
        layer: int | float,
        reduce: str = "last",
        model: str | None = None,
    ) -> Any:
        """`trialrun.local.steering.concept_vector` on the trial's local model."""
        from trialrun.local import steering

        def build(loaded: Any) -> Any:
            return steering.concept_vector(
                loaded.model, loaded.tokenizer, positive, negative, layer, reduce
            )

        return await self.exclusive(build, model)

    async def generate_steered(
        self,
        messages: Sequence[dict[str, str]],
        vector: Any,
        layer: int | float,
        strength: float,
        positions: str = "all",
        model: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """A generation with `strength × vector` added at `layer` (trialrun.local.steering),
        sampled with the trial's params updated by `params`: `{text, finish_reason, usage,
        injection}`, the injection as `Injection.to_json()`. Not a turn, not cached."""
        route = self._route(model)
        wanted = {**self._params(route), **params}
        sent = list(messages)

        def run(loaded: Any) -> dict[str, Any]:
            return _steered(loaded, sent, vector, layer, strength, positions, wanted)

        return await self.exclusive(run, model)

    # -- helpers ---------------------------------------------------------------------------

    def _route(self, model: str | None) -> ModelRoute:
        label = self.model if model is None else model
        route = self._run.routes.get(label)
        if route is None:
            known = ", ".join(self._run.routes)
            raise TrialrunError(f"ctx.generate: no model '{label}' in the experiment ({known})")
        return route

    def _params(self, route: ModelRoute) -> dict[str, Any]:
        if route.config.label == self.model:
            return dict(self.params)
        return requested_params(self._run.experiment, route.config, self._trial)

    def _loaded(self) -> Any:
        route = self._route(None)
        loaded = _hf_provider(route).resident_model(route.config.model_id)
        if loaded is None:
            raise TrialrunError(f"{self.model}: the local model is not loaded now")
        return loaded


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _hf_provider(route: ModelRoute) -> Any:
    """The route's local-model provider: `hf` in this process, or its Ray pool
    (trialrun.local.cluster), both with `run_exclusive` and `resident_model`."""
    refusal = getattr(route.provider, "steering_refusal", None)
    if refusal:  # a local engine that cannot be hooked (vllm/) says why
        raise TrialrunError(f"{route.config.label}: {refusal}")
    if route.provider_name != "hf" or not hasattr(route.provider, "run_exclusive"):
        raise TrialrunError(
            f"{route.config.label}: not a local hf/ model; hf_model, tokenizer, exclusive "
            "and steering need one"
        )
    return route.provider


def _steered(
    loaded: Any,
    messages: list[dict[str, str]],
    vector: Any,
    layer: int | float,
    strength: float,
    positions: Any,
    params: dict[str, Any],
) -> dict[str, Any]:
    from trialrun.local import steering
    from trialrun.local.generation import Row, generate_batch, render_prompt
    from trialrun.providers.hf import DEFAULT_MAX_TOKENS

    seed = params.get("seed")
    row = Row(
        prompt_ids=render_prompt(loaded.tokenizer, messages),
        max_tokens=int(params.get("max_tokens") or DEFAULT_MAX_TOKENS),
        temperature=float(params.get("temperature") or 0.0),
        top_p=None if params.get("top_p") is None else float(params["top_p"]),
        top_k=None if params.get("top_k") is None else int(params["top_k"]),
        seed=None if seed is None else int(seed),
    )
    with steering.steer(loaded.model, vector, layer, strength, positions) as injection:
        [result] = generate_batch(loaded, [row])
    return {
        "text": result.text,
        "finish_reason": result.finish_reason,
        "usage": {"input": result.input_tokens, "output": result.output_tokens},
        "injection": injection.to_json(),
    }


# ------------------------------------------------------------------ running one


@dataclass
class TaskOutcome:
    """A task trial's result (for the record) and its history (for an online judge)."""

    result: TrialResult
    history: list[dict[str, str]]


async def run_task(
    run: ExperimentRun,
    trial: PendingTrial,
    params: dict[str, Any],
    template_context: dict[str, Any],
    send: Send,
) -> TaskOutcome:
    """Run the experiment's task function as `trial`; never raises for the user's code."""
    assert run.task is not None
    context = TaskContext(
        item=trial.item,
        grid=trial.grid,
        seed=trial.seed,
        repeat=trial.repeat,
        model=trial.model,
        params=dict(params),
        messages=run.conversation.first_messages(template_context),
        trial_id=trial.trial_id,
        _run=run,
        _trial=trial,
        _send=send,
        _loop=asyncio.get_running_loop(),
    )
    result = TrialResult()
    try:
        value = await _call_task(run.task, context)
    except GenerationFailed as exc:
        result.error = str(exc)
    except Exception as exc:  # the user's code failing fails its trial, never the run
        result.error = describe_failure(exc)
    else:
        try:
            result.output = _output(value)
        except TrialrunError as exc:
            result.error = str(exc)
    result.turns, result.retries = context._calls.turns, context._calls.retries
    return TaskOutcome(result, context._calls.history)


async def _call_task(function: TaskFunction, context: TaskContext) -> Any:
    if inspect.iscoroutinefunction(function):
        return await function(context)
    value = await asyncio.to_thread(function, context)
    if inspect.isawaitable(value):  # a sync callable that hands back a coroutine
        value = await value
    return value


def _output(value: Any) -> dict[str, Any]:
    """The task's dict as JSON values; a TrialrunError saying why anything else is refused."""
    if not isinstance(value, dict):
        raise TrialrunError(f"the task returned {type(value).__name__}, not a dict")
    try:
        text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise TrialrunError(f"the task's output is not JSON-serialisable: {exc}") from None
    output: dict[str, Any] = orjson.loads(text)
    return output


def describe_failure(exc: BaseException) -> str:
    """`task raised Kind: message` and its traceback, redacted and bounded (the tail kept)."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = secrets.redact("".join(lines)).rstrip()
    if len(text) > MAX_TRACEBACK:
        text = "…" + text[-MAX_TRACEBACK:]
    first = secrets.redact(f"{type(exc).__name__}: {exc}".splitlines()[0])
    return f"task raised {first}\n{text}"
