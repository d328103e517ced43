"""Which provider answers each model entry, with which credentials and price.

`check_models` runs when a config is loaded (before anything is written); `build_routes`
when a run executes. Secrets are resolved from the environment here and only here, and
never written anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from trialrun import providers, secrets
from trialrun.config import SAMPLING_PARAMS, Experiment, ModelConfig, resolve_env
from trialrun.errors import ConfigError
from trialrun.executor.cache import cache_dir
from trialrun.executor.realtime import ModelRoute
from trialrun.pricing import Price, lookup

LOCAL_PROVIDERS = frozenset({"hf"})


def swapped(provider: str, mock: bool) -> bool:
    """Whether --mock answers this provider's calls (every API provider; local models stay)."""
    return mock and provider not in LOCAL_PROVIDERS


def resolve_settings(entry: ModelConfig, where: str) -> dict[str, Any]:
    """A model's ${env:...} references resolved (at run time only; never written anywhere)."""
    api_key = resolve_env(entry.api_key, f"{where}.api_key")
    secrets.remember(api_key)
    secrets.remember_env(getattr(providers.base.provider_class(entry.provider), "env_keys", ()))
    return {
        "api_key": api_key,
        "base_url": resolve_env(entry.base_url, f"{where}.base_url"),
        "options": resolve_env(entry.options, f"{where}.options"),
    }


def check_models(experiment: Experiment, mock: bool, source: str) -> None:
    """Fail now, in one line, on an unknown provider, an unset ${env:...} or a missing key."""
    for index, entry in enumerate(experiment.models):
        where = f"{source}: models[{index}]"
        if swapped(entry.provider, mock):
            continue
        providers.base.check_known(entry.provider, f"{where}.model")
        settings = resolve_settings(entry, where)
        _check_key(entry, settings, where)
        factory = providers.base.provider_class(entry.provider)
        if experiment.mode == "batch" and getattr(factory, "batch_limits", None) is None:
            raise ConfigError(
                f"{where} ({entry.model}): trialrun has no batch API for provider "
                f"'{entry.provider}'; use mode: realtime, or put this model in another experiment"
            )


def _check_key(entry: ModelConfig, settings: dict[str, Any], where: str) -> None:
    env_keys: tuple[str, ...] = getattr(
        providers.base.provider_class(entry.provider), "env_keys", ()
    )
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
    overrides = {key: Price(**value.model_dump()) for key, value in experiment.prices.items()}
    routes = {}
    for index, entry in enumerate(experiment.models):
        if swapped(entry.provider, mock):  # a dry run: no keys, no server, costs 0
            provider = _mock(experiment)
            routes[entry.label] = ModelRoute(
                entry, provider, "mock", entry.provider, None, entry.options
            )
            continue
        settings = resolve_settings(entry, f"models[{index}]")
        if entry.provider == "mock":
            provider = _mock(experiment)
            price = None
        else:
            provider = providers.create(
                entry.provider,
                api_key=settings["api_key"],
                base_url=settings["base_url"],
                max_response_bytes=_max_response_bytes(experiment, entry.provider),
                **settings["options"],
            )
            price = lookup(entry.model, overrides)
            if price is None:
                warn(
                    f"no price known for {entry.model}: its cost stays unknown (add it under "
                    "`prices:` in the config)"
                )
        routes[entry.label] = ModelRoute(
            entry,
            provider,
            entry.provider,
            entry.provider,
            settings["base_url"],
            settings["options"],
            price,
            _unsent(experiment, entry, provider, warn),
        )
    return routes


def _max_response_bytes(experiment: Experiment, name: str) -> int:
    """`limits.<name>.max_response_mb` in bytes, for the provider to cap each response body."""
    limit = experiment.limits.get(name)
    if limit is None:
        return providers.base.DEFAULT_MAX_RESPONSE_BYTES
    return int(limit.max_response_mb * providers.base.MB)


def _mock(experiment: Experiment) -> providers.Provider:
    """A mock provider; its simulated batches live beside the response cache."""
    batch_dir = cache_dir(experiment.cache.dir) / "mock-batches"
    return providers.create("mock", **experiment.mock.model_dump(), batch_dir=str(batch_dir))


def _unsent(
    experiment: Experiment, entry: ModelConfig, provider: Any, warn: Callable[[str], None]
) -> frozenset[str]:
    """The params this model's provider cannot take, with one warning naming them."""
    names = {"seed", *experiment.params, *entry.params}
    names |= {key for key in experiment.grid if key in SAMPLING_PARAMS}
    unsent = frozenset(provider.unsent_params(names))
    told = sorted(unsent - {"seed"})  # trialrun's own per-trial seed, not the user's choice
    if told:
        note = provider.params_note()
        warn(
            f"{entry.model} cannot take {', '.join(told)}: left out of its requests and records"
            + (f" ({note})" if note else "")
        )
    return unsent
