"""Which provider answers a name, and what each one needs.

Providers register by name with `@provider("name")` on a factory (usually the Provider
class) whose module imports its SDK only when used; the built-in ones are found through
`BUILTIN`, third-party ones through the `trialrun.providers` entry-point group. The
facts that routing, doctor and provenance need (API-key variables, SDK package and pip
extra, local or API, batch support) are read from the provider class here, so a new
provider is its module plus one line in `BUILTIN`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

from trialrun.errors import ConfigError

if TYPE_CHECKING:
    from trialrun.providers.base import Provider

ENTRY_POINT_GROUP = "trialrun.providers"
BUILTIN = {
    "mock": "trialrun.providers.mock",
    "openai": "trialrun.providers.openai",
    "anthropic": "trialrun.providers.anthropic",
    "google": "trialrun.providers.google",
    "hf": "trialrun.providers.hf",
    "vllm": "trialrun.providers.vllm",
}
"""Each built-in provider's name and module: the one list of them."""

Factory = Callable[..., "Provider"]
_REGISTRY: dict[str, Factory] = {}


def provider(name: str) -> Callable[[Factory], Factory]:
    """Register a provider factory under `name`."""

    def register(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory

    return register


def _load(name: str) -> Factory | None:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in BUILTIN:
        importlib.import_module(BUILTIN[name])
        return _REGISTRY.get(name)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            _REGISTRY[name] = entry.load()
            return _REGISTRY[name]
    return None


def available() -> list[str]:
    """Every provider name known: built-in, registered, and from installed plugins."""
    names = set(BUILTIN) | set(_REGISTRY)
    names |= {entry.name for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def check_known(name: str, where: str) -> None:
    """Raise a one-line ConfigError if no provider is registered under `name`."""
    if _load(name) is None:
        raise ConfigError(
            f"{where}: unknown provider '{name}' (available: {', '.join(available())}); "
            "use --mock to dry-run any config offline"
        )


def provider_class(name: str) -> Any:
    """The registered factory (usually the Provider class) for `name`, or None."""
    return _load(name)


def create(name: str, **settings: Any) -> Provider:
    """A provider `name` built with `settings` (a ConfigError if none has that name)."""
    factory = _load(name)
    if factory is None:
        raise ConfigError(f"unknown provider '{name}' (available: {', '.join(available())})")
    return factory(**settings)


# -- facts, read from the class (a plugin's plain factory has the defaults) ----------------


def env_keys(name: str) -> tuple[str, ...]:
    """The environment variables `name`'s SDK reads its API key from; empty if none."""
    keys: tuple[str, ...] = getattr(_load(name), "env_keys", ())
    return keys


def is_local(name: str) -> bool:
    """Whether `name` runs its models on this machine (so `--mock` leaves it in place)."""
    return bool(getattr(_load(name), "local", False))


def lane(name: str, label: str) -> str:
    """The real-time lane of a model entry: API models share their provider's lane (its
    limits and limiter); a local model has a lane of its own, so that its trials run
    together while it is resident (`label` if it starts `name/`, else `name:label`)."""
    if not is_local(name):
        return name
    return label if label.startswith(f"{name}/") else f"{name}:{label}"


def takes_batches(name: str) -> bool:
    """Whether `name` has a batch API (`mode: batch`)."""
    return getattr(_load(name), "batch_limits", None) is not None


def sdk_packages() -> dict[str, str]:
    """The SDK package of each built-in provider that needs one, with its pip extra."""
    packages = {}
    for name in BUILTIN:
        factory = _load(name)
        sdk, extra = getattr(factory, "sdk", None), getattr(factory, "extra", None)
        if sdk and extra:
            packages[sdk] = extra
    return packages
