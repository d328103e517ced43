"""The provider interface.

A provider implements one async method, `generate(request) -> Response`, abstract here
so that mypy and instantiation both catch an adapter without it; the rest have defaults
an adapter may override. Its class also states its own facts (`name`, `env_keys`, `sdk`,
`extra`, `local`, `batch_limits`), which routing, doctor and provenance read through
`trialrun.providers.registry`, so that adding a provider is one module plus one line there.
The batch side is in `batch.py`; the HTTP helpers the SDK-based adapters share are in
`http.py` and `sdk.py`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from trialrun.errors import ConfigError, ErrorKind, ProviderError
from trialrun.providers.batch import Batches
from trialrun.providers.http import DEFAULT_MAX_RESPONSE_BYTES, BodyLimit, is_transport_error
from trialrun.types import Request, Response


class Provider(Batches, ABC):
    """Base class for model providers: `generate` is the one method an adapter must write."""

    name: ClassVar[str] = ""
    env_keys: ClassVar[tuple[str, ...]] = ()
    """Environment variables the SDK reads its API key from (any one is enough); empty if none."""
    sdk: ClassVar[str | None] = None
    """The pip package the adapter needs beyond trialrun's own dependencies, if any."""
    extra: ClassVar[str | None] = None
    """trialrun's pip extra that installs `sdk` (`pip install 'trialrun[extra]'`)."""
    local: ClassVar[bool] = False
    """Runs the model on this machine: `--mock` leaves it in place (it costs no API call)."""
    notify: Callable[[str, str], None] | None = None
    """Where the provider reports events worth keeping in the run (`kind`, `note`): the run
    sets it to its store's event log; None outside a run."""

    def __init__(
        self, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, **settings: Any
    ) -> None:
        self.settings = settings
        self.body_limit = BodyLimit(self.name or type(self).__name__, max_response_bytes)

    @abstractmethod
    async def generate(self, request: Request) -> Response:
        """The model's answer to one request; raise (ProviderError or the SDK's own) on failure."""

    def classify_error(self, exc: BaseException) -> tuple[ErrorKind, float | None]:
        """(kind, retry_after_s) for an exception raised by `generate`."""
        if isinstance(exc, ProviderError):
            return exc.kind, exc.retry_after
        if isinstance(exc, asyncio.TimeoutError | TimeoutError | ConnectionError):
            return "retryable", None
        if is_transport_error(exc):
            return "retryable", None
        return "final", None

    def max_concurrency(self) -> int:
        return 64

    def unsent_params(self, names: Iterable[str]) -> list[str]:
        """Which of these sampling params this provider cannot send: they are left out of its
        requests and of the records' `params`, and the run warns once."""
        return []

    def params_note(self) -> str:
        """One clause on why params are left out, or how to send them, for that warning."""
        return ""

    def count_tokens(self, text: str) -> int | None:
        """Exact token count of `text` when a cheap offline tokenizer is at hand, else None."""
        return None

    def check_model(self, model: str) -> None:
        """Raise a one-line ConfigError when this provider cannot serve `model` (its id after
        `provider/`); checked offline when a config loads. A local folder that does not exist
        fails here; an API model id is the server's to judge."""
        return None

    @asynccontextmanager
    async def lane(self, model: str) -> AsyncIterator[None]:
        """Held by the real-time executor while it runs `model`'s lane. A local provider
        loads the model on entry, frees it on exit, and lets a bounded number of lanes in
        at once (one model resident at a time); an API provider needs nothing."""
        yield

    async def ping(self) -> str:
        """Check the endpoint answers with these credentials; return a short note, or raise."""
        return "no check"

    async def aclose(self) -> None:
        return None

    @classmethod
    def missing_sdk(cls) -> ConfigError:
        """The error for an adapter whose `sdk` package is not installed."""
        return ConfigError(
            f"the '{cls.extra}' provider needs the {cls.sdk} package: "
            f"pip install 'trialrun[{cls.extra}]'"
        )


LOCAL_PARAMS = frozenset(
    {"temperature", "top_p", "top_k", "max_tokens", "seed", "logprobs", "top_logprobs"}
)
"""The sampling params a local model's provider sends; the others are left out, with a warning."""


class LocalProvider(Provider):
    """A provider that runs models on hardware trialrun drives (`hf/`, `vllm/`, the Ray
    actors of `executor.ray`): it takes `LOCAL_PARAMS` only, and a failure that is not a
    ProviderError (a bug, broken weights, a dead engine) is final: a retry would not heal it."""

    local = True

    def unsent_params(self, names: Iterable[str]) -> list[str]:
        return sorted(name for name in names if name not in LOCAL_PARAMS)

    def params_note(self) -> str:
        return f"the {self.name} provider samples with temperature, top_p and top_k only"

    def classify_error(self, exc: BaseException) -> tuple[ErrorKind, float | None]:
        if isinstance(exc, ProviderError):
            return exc.kind, exc.retry_after
        return "final", None


class UnbuiltProvider(Provider):
    """Stands where a model's provider cannot be built here (its SDK is missing) and only its
    defaults are asked for (`plan`'s estimates): no tokenizer, every param sent, no answers."""

    async def generate(self, request: Request) -> Response:
        raise ProviderError(f"{request.model}: its provider is not built here", kind="final")
