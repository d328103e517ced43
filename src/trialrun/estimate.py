"""What `plan` tells before anything is paid: tokens and cost per model, and the first
requests as they would be sent. Nothing here calls a model.

Prompts are rendered from up to `SAMPLE_ITEMS` items spread over the dataset (each with
a different grid cell) and the mean is scaled to every trial, so a million items plan
as fast as two hundred. Tokens are counted with the provider's tokenizer where it has a
cheap offline one, else at about 4 characters a token (the rate limiter's own estimate).
Output is `max_tokens` per request, an upper bound; a follow-up turn's input is the
turns before it (their prompts plus `max_tokens` answers) plus its own message.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trialrun.config import JudgeConfig, ModelConfig
from trialrun.errors import TrialrunError
from trialrun.executor.judge import compile_prompt
from trialrun.executor.limits import estimate_tokens
from trialrun.executor.trial import ModelRoute, requested_params, sent_params, template_context
from trialrun.plan import cell_at, expand
from trialrun.pricing import Price, lookup
from trialrun.providers import registry
from trialrun.providers.base import Provider, UnbuiltProvider
from trialrun.routing import judge_entries, swapped
from trialrun.store import PendingTrial
from trialrun.types import Usage

if TYPE_CHECKING:
    from trialrun.api import Prepared

SAMPLE_ITEMS = 200


@dataclass(frozen=True)
class ModelEstimate:
    """One model's share of a plan."""

    label: str
    model: str
    trials: int
    requests: int
    input_tokens: int
    output_tokens: int
    """`max_tokens` for every request: an upper bound (0 where no max_tokens is set)."""
    price: Price | None
    free: bool
    """Answered by the mock (a `mock/` model, or any under --mock): costs nothing."""
    tokenizer: bool
    """Counted with the provider's own tokenizer, not at ~4 characters a token."""
    bounded: bool
    """Every request has a max_tokens, so the output bound holds."""
    judge: bool = False
    """An LLM judge's asks, not a model's trials."""
    local: bool = False
    """A local model (`hf/`): it costs GPU time (`gpu_time`), not API money."""

    def cost(self, *, batch: bool = False) -> float | None:
        if self.free or self.local:
            return 0.0
        if self.price is None:
            return None
        return self.price.cost(Usage(self.input_tokens, self.output_tokens), batch=batch)


@dataclass(frozen=True)
class Estimate:
    models: list[ModelEstimate]
    sampled: int
    """Items rendered; when fewer than `items`, the tokens are scaled up."""
    items: int

    def total(self, *, batch: bool = False) -> float:
        """The cost of the models with a price (see `unpriced` for the others)."""
        return sum(m.cost(batch=batch) or 0.0 for m in self.models)

    @property
    def unpriced(self) -> list[str]:
        return [m.model for m in self.models if m.cost() is None]


def estimate(prepared: Prepared) -> Estimate:
    """Tokens and cost of each model's trials, from a sample of rendered first turns."""
    sample = list(_sample(prepared))
    counts = prepared.trials_by_model()
    models = [
        _model_estimate(prepared, entry, sample, counts[entry.label])
        for entry in prepared.experiment.models
    ]
    trials = sum(counts.values())
    for judge, where in judge_entries(prepared.experiment):
        models.append(_judge_estimate(prepared, judge, where, sample, trials))
    return Estimate(models, len(sample), len(prepared.dataset))


def _judge_estimate(
    prepared: Prepared,
    judge: JudgeConfig,
    where: str,
    sample: list[tuple[str, dict[str, Any]]],
    trials: int,
) -> ModelEstimate:
    """A judge's share: one ask per trial (re-asks after an invalid verdict not counted),
    its prompt rendered from the sampled items with the graded answer as long as the
    trials' max_tokens (every turn's when the prompt reads `turns`), its output bounded by
    the judge's own max_tokens."""
    experiment = prepared.experiment
    prompt = compile_prompt(judge, where, experiment.grid)
    answer = experiment.params.get("max_tokens")
    answer = int(answer) if isinstance(answer, int | float) else 0
    seen = answer * (experiment.turn_count() if "turns" in prompt.names else 1)
    count = _Count(UnbuiltProvider())
    sizes = []
    for position, (item_id, item) in enumerate(sample):
        trial = PendingTrial(0, "", item_id, item, "", _cell(prepared, position), 0, 0)
        context = {**template_context(trial), "response": "", "scores": {}}
        context["item"] = {experiment.dataset.id: item_id, **item}
        try:
            text = prompt.render(context)
        except TrialrunError:
            continue
        sizes.append(estimate_tokens([{"role": "user", "content": text}], 0, count) + seen)
    mean_in = sum(sizes) / len(sizes) if sizes else 0.0
    max_tokens = judge.sent_params().get("max_tokens")
    out = int(max_tokens) if isinstance(max_tokens, int | float) else 0
    overrides = {k: Price(**v.model_dump()) for k, v in experiment.prices.items()}
    return ModelEstimate(
        label=f"{judge.label} (judge: {judge.model})",
        model=judge.model,
        trials=trials,
        requests=trials,
        input_tokens=round(mean_in * trials),
        output_tokens=out * trials,
        price=lookup(judge.model, overrides),
        free=judge.provider == "mock" or swapped(judge.provider, prepared.mock),
        tokenizer=False,
        bounded=max_tokens is not None,
        judge=True,
    )


def _sample(prepared: Prepared) -> Iterator[tuple[str, dict[str, Any]]]:
    """Up to SAMPLE_ITEMS (id, item) pairs evenly spread over the dataset."""
    step = max(len(prepared.dataset) // SAMPLE_ITEMS, 1)
    pairs = zip(prepared.dataset.ids, prepared.dataset, strict=True)
    return itertools.islice(pairs, 0, step * SAMPLE_ITEMS, step)


def _model_estimate(
    prepared: Prepared,
    entry: ModelConfig,
    sample: list[tuple[str, dict[str, Any]]],
    trials: int,
) -> ModelEstimate:
    route = offline_route(prepared, entry)
    counter = _Count(route.provider)
    per_trial = []
    for position, (item_id, item) in enumerate(sample):
        trial = PendingTrial(0, "", item_id, item, entry.label, _cell(prepared, position), 0, 0)
        usage = _trial_usage(prepared, route, counter, trial)
        if usage is not None:
            per_trial.append(usage)
    mean_in = sum(u.input for u in per_trial) / len(per_trial) if per_trial else 0.0
    mean_out = sum(u.output for u in per_trial) / len(per_trial) if per_trial else 0.0
    overrides = {k: Price(**v.model_dump()) for k, v in prepared.experiment.prices.items()}
    return ModelEstimate(
        label=entry.label,
        model=entry.model,
        trials=trials,
        requests=trials * prepared.experiment.turn_count(),
        input_tokens=round(mean_in * trials),
        output_tokens=round(mean_out * trials),
        price=lookup(entry.model, overrides),
        free=entry.provider == "mock" or swapped(entry.provider, prepared.mock),
        local=registry.is_local(entry.provider),
        tokenizer=counter.exact,
        bounded=all(u.bounded for u in per_trial),
    )


def _cell(prepared: Prepared, position: int) -> dict[str, Any]:
    """The grid cell of the `position`-th sampled item: cells taken in turn, so a grid value
    that templates read is sampled too."""
    return cell_at(prepared.experiment.grid, position)


@dataclass
class _Usage:
    input: int
    output: int
    bounded: bool


class _Count:
    """The provider's tokenizer; remembers whether it ever fell back to characters."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.exact = True

    def __call__(self, text: str) -> int | None:
        counted = self.provider.count_tokens(text)
        if counted is None:
            self.exact = False
        return counted


def _trial_usage(
    prepared: Prepared, route: ModelRoute, count: _Count, trial: PendingTrial
) -> _Usage | None:
    """Input and output tokens of one trial, every turn; None if its templates fail (the trial
    would fail too, and is left out of the mean)."""
    experiment = prepared.experiment
    params = sent_params(route, requested_params(experiment, route.config, trial))
    max_tokens = params.get("max_tokens")
    answer = int(max_tokens) if isinstance(max_tokens, int | float) else 0
    context = template_context(trial)
    try:
        prompt = estimate_tokens(prepared.conversation.first_messages(context), 0, count)
        total_in = prompt
        for turn in range(1, experiment.turn_count()):
            context["turn"] = turn + 1
            context["turns"] = [{"user": "", "response": ""}] * turn
            followup = prepared.conversation.followup(turn - 1, context)
            prompt += answer + 4 + estimate_tokens([followup], 0, count)
            total_in += prompt
    except TrialrunError:
        return None
    return _Usage(total_in, answer * experiment.turn_count(), max_tokens is not None)


def offline_route(prepared: Prepared, entry: ModelConfig) -> ModelRoute:
    """A route as a real run builds it, with the provider built offline (no key, no client),
    or an UnbuiltProvider (no tokenizer, sends every param) where that cannot be built."""
    provider = prepared.models.offline.get(entry.label) or UnbuiltProvider()
    unsent = prepared.models.unsent.get(entry.label, frozenset())
    return ModelRoute(
        entry, provider, entry.provider, entry.provider, None, entry.options, unsent=unsent
    )


# ------------------------------------------------------------------ plan --show


@dataclass(frozen=True)
class Preview:
    """One trial's first request as it would be sent, and its follow-up templates."""

    trial_id: str
    model: str
    model_id: str
    grid: dict[str, Any]
    repeat: int
    params: dict[str, Any]
    messages: list[dict[str, str]] | None
    error: str | None
    """Why the first turn cannot be rendered (the trial would fail the same way)."""
    followups: list[str]
    """Template sources: they are rendered with the answers of the turns before."""


def preview(prepared: Prepared, count: int) -> list[Preview]:
    """The first `count` trials' first requests, as the real provider would be sent them."""
    experiment = prepared.experiment
    entries = {m.label: m for m in experiment.models}
    find = _item_finder(prepared)
    trials = expand(experiment, prepared.dataset.ids, prepared.shard, prepared.limit)
    shown = []
    for trial in itertools.islice(trials, count):
        pending = PendingTrial(
            trial.seq,
            trial.trial_id,
            trial.item_id,
            find(trial.item_id),
            trial.model,
            trial.grid,
            trial.repeat,
            trial.seed,
        )
        shown.append(_preview(prepared, offline_route(prepared, entries[trial.model]), pending))
    return shown


def _item_finder(prepared: Prepared) -> Callable[[str], dict[str, Any]]:
    """Items by id for trials in plan order (item by item), decoding only those reached."""
    pairs = zip(prepared.dataset.ids, prepared.dataset, strict=True)
    last: dict[str, dict[str, Any]] = {}

    def find(item_id: str) -> dict[str, Any]:
        if item_id not in last:
            last.clear()
            for pair_id, item in pairs:
                if pair_id == item_id:
                    last[pair_id] = item
                    break
        return last[item_id]

    return find


def _preview(prepared: Prepared, route: ModelRoute, trial: PendingTrial) -> Preview:
    params = sent_params(route, requested_params(prepared.experiment, route.config, trial))
    messages, error = None, None
    try:
        messages = prepared.conversation.first_messages(template_context(trial))
    except TrialrunError as exc:
        error = str(exc)
    return Preview(
        trial_id=trial.trial_id,
        model=trial.model,
        model_id=route.config.model_id,
        grid=trial.grid,
        repeat=trial.repeat,
        params=params,
        messages=messages,
        error=error,
        followups=[t.source for t in prepared.conversation.followups],
    )


# ------------------------------------------------------------------ wall time

DEFAULT_LATENCY_S = 2.0
"""A typical API call's seconds when neither `plan --latency` nor the mock's config says."""
BATCH_TYPICAL_H = 1.0
"""A batch's typical turnaround in hours (often minutes, sometimes hours); the providers'
window is 24 h, the worst case shown beside it."""
BATCH_WINDOW_H = 24.0


@dataclass(frozen=True)
class WallTime:
    """How long a plan takes: real time (per lane, the slowest lane wins) and batch mode."""

    realtime_s: float
    bound_by: str
    """What sets the real-time figure: `rpm`, `tpm`, `concurrency x latency` or `turns in a row`."""
    lane: str
    latency_s: float
    stages: int
    """Batch stages: one per turn, one more per online judge stage."""
    batch_typical_h: float
    batch_worst_h: float
    batchable: bool = True
    """False when a local model is in the plan: it has no batch API."""


def wall_time(prepared: Prepared, result: Estimate, latency_s: float | None = None) -> WallTime:
    """Real time from each lane's limits: requests / rpm, tokens / tpm and requests x latency
    / concurrency, the largest (lanes run side by side, so the slowest lane's); never less
    than one trial's turns in a row. Batch mode: stages x a typical turnaround (24 h at
    worst per stage)."""
    experiment = prepared.experiment
    mock = experiment.mock
    by_lane: dict[str, list[ModelEstimate]] = {}
    entries = {m.label: m for m in experiment.models}
    judges = {f"{j.label} (judge: {j.model})": j for j in experiment.judges()}
    for m in result.models:
        entry = entries.get(m.label) or judges.get(m.label)
        provider = "mock" if m.free else (entry.provider if entry else m.model.split("/")[0])
        by_lane.setdefault(provider, []).append(m)
    worst = (0.0, "turns in a row", "-")
    latency = latency_s
    for lane, models in by_lane.items():
        lane_latency = latency_s if latency_s is not None else _latency(lane, mock.latency_s)
        latency = lane_latency if latency is None else max(latency, lane_latency)
        limit = experiment.limits.get(lane)
        requests = sum(m.requests for m in models)
        tokens = sum(m.input_tokens + m.output_tokens for m in models)
        concurrency = (limit.concurrency if limit else None) or (
            mock.concurrency if lane == "mock" else 64
        )
        candidates = [(requests * lane_latency / concurrency, "concurrency x latency")]
        if limit is not None and limit.rpm:
            candidates.append((requests / limit.rpm * 60, "rpm"))
        if limit is not None and limit.tpm:
            candidates.append((tokens / limit.tpm * 60, "tpm"))
        seconds, bound = max(candidates)
        if seconds > worst[0]:
            worst = (seconds, bound, lane)
    turns = experiment.turn_count()
    online = any(j.when == "online" for j in experiment.judges())
    latency = DEFAULT_LATENCY_S if latency is None else latency
    chain = (turns + int(online)) * latency
    seconds, bound, lane = worst
    if chain > seconds:
        seconds, bound = chain, "turns in a row"
    stages = turns + (1 if experiment.judges() else 0)
    return WallTime(
        seconds,
        bound,
        lane,
        latency,
        stages,
        stages * BATCH_TYPICAL_H,
        stages * BATCH_WINDOW_H,
        not any(m.local for m in result.models),
    )


def _latency(lane: str, mock_latency: float) -> float:
    return mock_latency if lane == "mock" else DEFAULT_LATENCY_S


def duration_text(seconds: float) -> str:
    """`45 s`, `12 min`, `3.4 h`, `2.1 days`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# ------------------------------------------------------------------ GPU time

GPU_PRICES: dict[str, float] = {"A100": 1.30, "H100": 3.00, "H200": 4.00, "L40S": 0.92}
"""Rough on-demand USD per GPU-hour, for orders of magnitude only (`plan --gpu-price` for
yours). A100 80GB, H100 SXM and H200: the middle of the specialty-cloud range in Mercatus'
"Cloud GPU pricing" (May 2026: $1.10-1.50, $2.50-3.50, $3.50-4.50); L40S: the median over
10 providers on rentgpu.org (2026: $0.92). Hyperscalers charge about twice these. No
citable figure was found for L4 or RTX A6000: give their price with --gpu-price."""


@dataclass(frozen=True)
class GpuTime:
    """The GPU hours of a plan's local-model trials, at a stated time per trial."""

    trials: int
    seconds_per_trial: float | None
    gpu: str
    usd_per_hour: float | None

    @property
    def hours(self) -> float | None:
        if self.seconds_per_trial is None:
            return None
        return self.trials * self.seconds_per_trial / 3600

    @property
    def usd(self) -> float | None:
        hours = self.hours
        return None if hours is None or self.usd_per_hour is None else hours * self.usd_per_hour


def gpu_time(
    result: Estimate, seconds_per_trial: float | None, gpu: str, usd_per_hour: float | None
) -> GpuTime | None:
    """GPU hours and cost of the local models' trials (None without local models): trials x
    the stated seconds a trial (time a pilot: `trialrun run CONFIG --limit 20`, then its
    records' `elapsed_s`), at `usd_per_hour` or the GPU's rough price in `GPU_PRICES`."""
    trials = sum(m.trials for m in result.models if m.local)
    if not trials:
        return None
    price = usd_per_hour if usd_per_hour is not None else GPU_PRICES.get(gpu.upper())
    return GpuTime(trials, seconds_per_trial, gpu.upper(), price)
