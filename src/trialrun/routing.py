"""Which provider answers each model entry, with which credentials and price.

`check_models` runs when a config is loaded (before anything is written); `build_routes`
when a run executes. Secrets are resolved from the environment here and only here, and
never written anywhere.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trialrun import providers, secrets
from trialrun.config import (
    SAMPLING_PARAMS,
    Experiment,
    JudgeConfig,
    ModelConfig,
)
from trialrun.env_refs import env_references, resolve_env
from trialrun.errors import ConfigError
from trialrun.executor.cache import cache_dir
from trialrun.executor.trial import ModelRoute
from trialrun.plan import cell_count
from trialrun.pricing import Price, lookup
from trialrun.providers import registry
from trialrun.providers.http import DEFAULT_MAX_RESPONSE_BYTES, MB
from trialrun.templates import Template

LOCAL_PRICE = Price(0.0, 0.0)
"""A local model's calls cost no API money (its machine time is not priced here)."""


def swapped(provider: str, mock: bool) -> bool:
    """Whether --mock answers this provider's calls (every API provider; local models stay)."""
    return mock and not registry.is_local(provider)


def resolve_settings(entry: ModelConfig, where: str) -> dict[str, Any]:
    """A model's ${env:...} references resolved (at run time only; never written anywhere)."""
    api_key = resolve_env(entry.api_key, f"{where}.api_key")
    secrets.remember(api_key)
    secrets.remember_env(registry.env_keys(entry.provider))
    secrets.remember_env(env_references(entry.options))  # a token passed as an option
    base_url = resolve_env(entry.base_url, f"{where}.base_url")
    secrets.remember_url_password(base_url)
    return {
        "api_key": api_key,
        "base_url": base_url,
        "options": resolve_env(entry.options, f"{where}.options"),
    }


@dataclass(frozen=True, slots=True)
class KeyNeed:
    """An environment variable a real run of one model reads (a key, a URL, an option)."""

    model: str
    names: tuple[str, ...]
    """Any one of them is enough."""
    present: bool


@dataclass
class ModelCheck:
    """What loading learned about the models without calling any: warnings, the keys a real
    run needs, and each model's provider built offline (no key, no client) for its tokenizer
    and the params it cannot take."""

    warnings: list[str] = field(default_factory=list)
    keys: list[KeyNeed] = field(default_factory=list)
    offline: dict[str, providers.Provider | None] = field(default_factory=dict)
    """By model label; None where the provider cannot be built here (its SDK is missing)."""
    unsent: dict[str, frozenset[str]] = field(default_factory=dict)
    """By model label: the params its real provider leaves out."""


def check_models(
    experiment: Experiment, mock: bool, source: str, *, need_keys: bool = True
) -> ModelCheck:
    """Fail now, in one line, on an unknown provider, a mode it cannot serve, or (with
    `need_keys`) an unset ${env:...} or a missing key. Under --mock the real provider is still
    checked, so a dry run refuses and warns as the real run would."""
    checked = ModelCheck(warnings=_mock_limit_warnings(experiment, mock))
    for index, entry in enumerate(experiment.models):
        where = f"{source}: models[{index}]"
        registry.check_known(entry.provider, f"{where}.model")
        _check_batch(experiment, entry, where)
        real = not swapped(entry.provider, mock)
        if real and need_keys:
            _check_key(entry, resolve_settings(entry, where), where)
        elif real:
            checked.keys.extend(_key_needs(entry))
        offline = _offline(entry, where, required=real and need_keys)
        _check_model(entry, offline, where)
        unsent = _unsent_of(experiment, entry, offline)
        checked.offline[entry.label], checked.unsent[entry.label] = offline, unsent
        message = unsent_message(entry, unsent, offline)
        if message:
            checked.warnings.append(message)
    checked.keys.extend(check_judges(experiment, mock, source, need_keys=need_keys))
    checked.warnings.extend(_check_executor(experiment, source))
    return checked


def _check_executor(experiment: Experiment, source: str) -> list[str]:
    """`executor.ray`: Ray installed (a one-line error), and a warning when no model of the
    experiment would run there."""
    if experiment.executor.ray is None:
        return []
    from trialrun.local.cluster import require_ray

    try:
        require_ray()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if any(entry.provider == "hf" for entry in experiment.models):
        return []
    return [
        "executor.ray runs hf/ models only and this experiment has none: every trial runs "
        "in this process"
    ]


def check_judges(
    experiment: Experiment, mock: bool, source: str, *, need_keys: bool = True
) -> list[KeyNeed]:
    """`check_models` for the judges: a known provider, batch support in batch mode, and
    (with `need_keys`) their keys; without, the keys a real run would read."""
    needs = []
    for judge, where in judge_entries(experiment, source):
        registry.check_known(judge.provider, f"{where}.model")
        _check_batch(experiment, judge, where)
        real = not swapped(judge.provider, mock)
        if real and need_keys:
            _check_key(judge, resolve_settings(judge, where), where)
        elif real:
            needs.extend(_key_needs(judge))
    return needs


def check_budget(experiment: Experiment, mock: bool, source: str) -> None:
    """Under `budget:`, every model and judge a provider bills has a known price and a
    max_tokens, so each request's worst case is known before it is sent."""
    if experiment.budget is None:
        return
    overrides = {key: Price(**value.model_dump()) for key, value in experiment.prices.items()}
    entries: list[tuple[ModelConfig, str, Any]] = [
        (entry, f"models[{index}]", {**experiment.params, **entry.params}.get("max_tokens"))
        for index, entry in enumerate(experiment.models)
    ]
    entries += [
        (judge, where, judge.sent_params().get("max_tokens"))
        for judge, where in judge_entries(experiment)
    ]
    for entry, where, max_tokens in entries:
        if entry.provider == "mock" or swapped(entry.provider, mock):
            continue
        if registry.is_local(entry.provider):  # a local model bills no API money
            continue
        if lookup(entry.model, overrides) is None:
            raise ConfigError(
                f"{source}: budget.max_usd: no price known for {entry.model} ({where}), so "
                "its spend cannot be held to the budget; add it under `prices:`"
            )
        if max_tokens is None:
            raise ConfigError(
                f"{source}: budget.max_usd: {where} ({entry.model}) has no max_tokens, so a "
                "request's worst-case cost is unbounded; set params.max_tokens"
            )


def judge_entries(experiment: Experiment, source: str = "") -> list[tuple[JudgeConfig, str]]:
    """Each judge with the key that names it in errors (`judge`, or `judge[i]` in a list)."""
    prefix = f"{source}: " if source else ""
    listed = isinstance(experiment.judge, list)
    return [
        (judge, f"{prefix}judge[{index}]" if listed else f"{prefix}judge")
        for index, judge in enumerate(experiment.judges())
    ]


def _check_batch(experiment: Experiment, entry: ModelConfig, where: str) -> None:
    if experiment.mode == "batch" and not registry.takes_batches(entry.provider):
        raise ConfigError(
            f"{where} ({entry.model}): trialrun has no batch API for provider "
            f"'{entry.provider}'; use mode: realtime, or put this model in another experiment"
        )


def _mock_limit_warnings(experiment: Experiment, mock: bool) -> list[str]:
    """Under --mock a swapped provider's rpm/tpm/concurrency would only slow the dry run."""
    warnings = []
    for name, limit in experiment.limits.items():
        if not swapped(name, mock) or name == "mock":
            continue
        shown = [
            f"{key} {value:g}"
            for key, value in limit.model_dump().items()
            if key in ("rpm", "tpm", "concurrency") and value is not None
        ]
        if shown:
            warnings.append(
                f"--mock: limits.{name} ({', '.join(shown)}) not applied; the mock's own "
                f"limits are (concurrency {experiment.mock.concurrency}, no rpm or tpm)"
            )
    return warnings


def _key_needs(entry: ModelConfig) -> list[KeyNeed]:
    """The variables a real run of `entry` reads, without reading them (`plan`)."""
    needs = [
        KeyNeed(entry.model, (name,), bool(os.environ.get(name)))
        for name in sorted(env_references([entry.api_key, entry.base_url, entry.options]))
    ]
    env_keys = registry.env_keys(entry.provider)
    if env_keys and not entry.api_key and not entry.base_url:
        present = any(os.environ.get(name) for name in env_keys)
        needs.append(KeyNeed(entry.model, env_keys, present))
    return needs


def _offline(entry: ModelConfig, where: str, *, required: bool) -> providers.Provider | None:
    """The entry's provider built as a run builds it, but with no key and so no client: its
    tokenizer and the params it cannot take. None if its SDK is missing and no real call of
    it is coming (`plan`, or --mock); a real run fails here, before anything is written."""
    options = _lenient(entry.options, f"{where}.options")
    base_url = _lenient(entry.base_url, f"{where}.base_url")
    try:
        return providers.create(entry.provider, base_url=base_url, **options)
    except ConfigError:
        if required:
            raise
        return None
    except Exception:  # a third-party factory that insists on its key: no offline checks
        return None


def _check_model(entry: ModelConfig, provider: providers.Provider | None, where: str) -> None:
    """The provider's own offline check of the model id (a local folder that is missing)."""
    if provider is None:
        return
    try:
        provider.check_model(entry.model_id)
    except ConfigError as exc:
        raise ConfigError(f"{where}.model: {exc}") from None


def _lenient(value: Any, where: str) -> Any:
    """`value` with its ${env:...} resolved where set; as written where not (never sent)."""
    try:
        return resolve_env(value, where)
    except ConfigError:
        return value


def unsent_names(experiment: Experiment, entry: ModelConfig) -> set[str]:
    """The params a request of `entry` may carry: trialrun's seed, the configured params and
    the grid's sampling keys."""
    names = {"seed", *experiment.params, *entry.params}
    return names | {key for key in experiment.grid if key in SAMPLING_PARAMS}


def _unsent_of(
    experiment: Experiment, entry: ModelConfig, provider: providers.Provider | None
) -> frozenset[str]:
    if provider is None:
        return frozenset()
    return frozenset(provider.unsent_params(unsent_names(experiment, entry)))


def unsent_message(entry: ModelConfig, unsent: frozenset[str], provider: Any) -> str | None:
    """The one warning naming what `entry` leaves out (the same text in `plan`, `run` and
    `run --mock`); None when only trialrun's own per-trial seed is left out."""
    told = sorted(unsent - {"seed"})
    if not told:
        return None
    note = provider.params_note() if provider is not None else ""
    return f"{entry.model} cannot take {', '.join(told)}: left out of its requests and records" + (
        f" ({note})" if note else ""
    )


def collapse_warnings(
    experiment: Experiment, unsent: dict[str, frozenset[str]], read: set[str]
) -> list[str]:
    """Grid keys a model cannot take make its cells identical requests: one warning per model
    naming them. Keys the templates read (`read`: template names) still vary the prompt."""
    if "grid" in read:
        return []
    total = cell_count(experiment.grid)
    warnings = []
    for entry in experiment.models:
        keys = [k for k in experiment.grid if k in unsent.get(entry.label, ()) and k not in read]
        if not keys:
            continue
        distinct = total // math.prod(len(experiment.grid[k]) for k in keys)
        warnings.append(
            f"{entry.label}: grid {', '.join(keys)} never reaches the model, so its {total:,} "
            f"cells send the requests of {distinct:,} ({total - distinct:,} collapse into "
            f"others: more repeats, not more conditions)"
        )
    return warnings


def _check_key(entry: ModelConfig, settings: dict[str, Any], where: str) -> None:
    env_keys = registry.env_keys(entry.provider)
    if not env_keys or settings["api_key"] or settings["base_url"]:
        return  # no key needed, one given, or a self-hosted endpoint that may need none
    if not any(os.environ.get(name) for name in env_keys):
        raise ConfigError(
            f"{where} ({entry.model}): no API key; export {' or '.join(env_keys)}, or set "
            "api_key: ${env:NAME} (use --mock for an offline dry run)"
        )


def build_routes(
    experiment: Experiment, mock: bool, warn: Callable[[str], None]
) -> dict[str, ModelRoute]:
    """Each model's route: its provider built with its resolved settings, price and unsent
    params; under --mock, the mock in every API provider's place."""
    overrides = {key: Price(**value.model_dump()) for key, value in experiment.prices.items()}
    routes = {}
    for index, entry in enumerate(experiment.models):
        if swapped(entry.provider, mock):  # a dry run: no keys, no server, costs 0
            provider = _mock(experiment)
            routes[entry.label] = ModelRoute(
                entry, provider, "mock", entry.provider, None, entry.options
            )
        else:
            unsent_of = unsent_names(experiment, entry)
            where = f"models[{index}]"
            routes[entry.label] = _route(experiment, entry, where, overrides, warn, unsent_of)
        if routes[entry.label].provider_name == "mock":
            routes[entry.label].mock_answer = mock_answer(experiment, index)
    return routes


def build_judge_routes(
    experiment: Experiment, mock: bool, warn: Callable[[str], None]
) -> dict[str, ModelRoute]:
    """Each judge's route by judge name, built as a model's is (the mock under --mock)."""
    overrides = {key: Price(**value.model_dump()) for key, value in experiment.prices.items()}
    routes = {}
    for judge, where in judge_entries(experiment):
        if swapped(judge.provider, mock):
            provider = _mock(experiment)
            route = ModelRoute(judge, provider, "mock", judge.provider, None, judge.options)
        else:
            names = set(judge.sent_params())
            route = _route(experiment, judge, where, overrides, warn, names)
        routes[judge.label] = route
    return routes


def mock_answer(experiment: Experiment, index: int, source: str = "") -> Template | None:
    """The right-answer template a mock model answers with (its entry's `options.answer`,
    else `mock.answer`), or None when it answers as it always has. `source` prefixes the
    template's name in errors (the config file)."""
    entry = experiment.models[index]
    answer = entry.options.get("answer", experiment.mock.answer)
    if answer is None:
        return None
    where = f"models[{index}].options.answer" if "answer" in entry.options else "mock.answer"
    return Template(str(answer), f"{source}: {where}" if source else where)


def graded_mock_answers(experiment: Experiment, mock: bool, source: str) -> list[Template]:
    """The right-answer templates of the models a mock answers, checked at load: a mock
    model entry's `options.accuracy` must be a number from 0 to 1 and its `choices` a list
    of two or more texts (`mock.accuracy`/`mock.choices` are checked by the config)."""
    templates = []
    for index, entry in enumerate(experiment.models):
        if entry.provider != "mock" and not swapped(entry.provider, mock):
            continue
        where = f"{source}: models[{index}].options"
        accuracy = entry.options.get("accuracy", 1.0)
        if isinstance(accuracy, bool) or not isinstance(accuracy, int | float):
            raise ConfigError(f"{where}.accuracy: expected a number from 0 to 1")
        if not 0 <= accuracy <= 1:
            raise ConfigError(f"{where}.accuracy: expected a number from 0 to 1 (got {accuracy})")
        choices = entry.options.get("choices")
        if choices is not None and not (
            isinstance(choices, list)
            and len(choices) >= 2
            and all(isinstance(c, str) for c in choices)
        ):
            raise ConfigError(f"{where}.choices: expected a list of two or more texts")
        template = mock_answer(experiment, index, source)
        if template is not None:
            templates.append(template)
    return templates


def _route(
    experiment: Experiment,
    entry: ModelConfig,
    where: str,
    overrides: dict[str, Price],
    warn: Callable[[str], None],
    param_names: set[str],
) -> ModelRoute:
    """The route of the model entry (or judge) at `where` as configured (a real run, or the
    mock asked for by name); `param_names`: the params its requests may carry."""
    settings = resolve_settings(entry, where)
    price = None
    if entry.provider == "mock":
        provider = _mock(experiment)
    elif experiment.executor.ray is not None and entry.provider == "hf":
        from trialrun.local.cluster import RayModels

        provider = RayModels(
            experiment.executor.ray,
            entry.provider,
            {"api_key": settings["api_key"], "base_url": settings["base_url"], **settings["options"]},
        )
        price = LOCAL_PRICE
    else:
        provider = providers.create(
            entry.provider,
            api_key=settings["api_key"],
            base_url=settings["base_url"],
            max_response_bytes=_max_response_bytes(experiment, entry.provider),
            **settings["options"],
        )
        price = LOCAL_PRICE if registry.is_local(entry.provider) else lookup(entry.model, overrides)
        if price is None:
            warn(
                f"no price known for {entry.model}: its cost stays unknown (add it under "
                "`prices:` in the config)"
            )
    return ModelRoute(
        entry,
        provider,
        entry.provider,
        registry.lane(entry.provider, entry.label),
        settings["base_url"],
        settings["options"],
        price,
        _unsent(entry, provider, param_names, warn),
    )


def _max_response_bytes(experiment: Experiment, name: str) -> int:
    """`limits.<name>.max_response_mb` in bytes, for the provider to cap each response body."""
    limit = experiment.limits.get(name)
    if limit is None:
        return DEFAULT_MAX_RESPONSE_BYTES
    return int(limit.max_response_mb * MB)


def _mock(experiment: Experiment) -> providers.Provider:
    """A mock provider; its simulated batches live beside the response cache."""
    batch_dir = cache_dir(experiment.cache.dir) / "mock-batches"
    return providers.create("mock", **experiment.mock.model_dump(), batch_dir=str(batch_dir))


def _unsent(
    entry: ModelConfig, provider: Any, names: set[str], warn: Callable[[str], None]
) -> frozenset[str]:
    """The params of `names` this model's provider cannot take, with one warning naming them."""
    unsent = frozenset(provider.unsent_params(names))
    message = unsent_message(entry, unsent, provider)
    if message:
        warn(message)
    return unsent
