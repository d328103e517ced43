"""The provider interface and its registry.

A provider implements one async method, `generate(request) -> Response`; the rest
have defaults an adapter may override. Providers register by name with
`@provider("name")` on a factory that imports its SDK only when used, or from a
third-party package through the `trialrun.providers` entry-point group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from importlib import metadata
from typing import Any, ClassVar

from trialrun.errors import ConfigError, ErrorKind, ProviderError
from trialrun.types import Request, Response

ENTRY_POINT_GROUP = "trialrun.providers"


class Provider:
    """Base class for model providers."""

    name: ClassVar[str] = ""
    env_key: ClassVar[str | None] = None
    """Environment variable holding this provider's API key, if it needs one."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    async def generate(self, request: Request) -> Response:
        raise NotImplementedError

    def classify_error(self, exc: BaseException) -> tuple[ErrorKind, float | None]:
        """(kind, retry_after_s) for an exception raised by `generate`."""
        if isinstance(exc, ProviderError):
            return exc.kind, exc.retry_after
        if isinstance(exc, asyncio.TimeoutError | TimeoutError | ConnectionError):
            return "retryable", None
        return "final", None

    def max_concurrency(self) -> int:
        return 64

    async def aclose(self) -> None:
        return None


Factory = Callable[..., Provider]
_REGISTRY: dict[str, Factory] = {}
_BUILTIN_MODULES = {"mock": "trialrun.providers.mock"}


def provider(name: str) -> Callable[[Factory], Factory]:
    """Register a provider factory under `name`."""

    def register(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory

    return register


def _load(name: str) -> Factory | None:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN_MODULES:
        __import__(_BUILTIN_MODULES[name])
        return _REGISTRY.get(name)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            _REGISTRY[name] = entry.load()
            return _REGISTRY[name]
    return None


def available() -> list[str]:
    names = set(_BUILTIN_MODULES) | set(_REGISTRY)
    names |= {entry.name for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def check_known(name: str, where: str) -> None:
    """Raise a one-line ConfigError if no provider is registered under `name`."""
    if _load(name) is None:
        raise ConfigError(
            f"{where}: unknown provider '{name}' (available: {', '.join(available())}); "
            "use --mock to dry-run any config offline"
        )


def create(name: str, **settings: Any) -> Provider:
    factory = _load(name)
    if factory is None:
        raise ConfigError(f"unknown provider '{name}' (available: {', '.join(available())})")
    return factory(**settings)
