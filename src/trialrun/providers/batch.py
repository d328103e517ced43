"""The batch side of a provider: what `mode: batch` needs from a service's batch API.

Every provider answers the batch calls (`Batches`, which `Provider` inherits, says "no batch
API" in each); one whose service has a batch API inherits `BatchAPI` as well, which makes
the six hooks abstract, so a batch provider that forgets one cannot be instantiated. Batch
support is `batch_limits is not None`, a class fact that `routing` reads before any
provider is built. Queueing, splitting by the limits, persistence of batch ids, polling,
retries and reconciliation live in `executor/batch.py`; docs/design/batch.md says why the
hooks are these six.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trialrun.errors import ErrorKind
from trialrun.types import Request, Response


@dataclass(slots=True)
class BatchStatus:
    """A provider batch as last polled, in neutral terms."""

    ended: bool
    """Processing is over (completed, expired, cancelled or failed): its results can be read."""
    raw: str
    """The provider's own state word (`in_progress`, `completed`, `ended`, ...)."""
    counts: dict[str, int] = field(default_factory=dict)
    note: str | None = None
    """Why it ended early (expired, cancelled, failed), for the run's events and `status`."""
    failed: bool = False
    """The whole batch failed (validation, quota) and nothing in it ran."""


@dataclass(slots=True)
class BatchOutcome:
    """One request's result in a finished batch."""

    custom_id: str
    response: Response | None = None
    error: str | None = None
    kind: ErrorKind = "retryable"
    unprocessed: bool = False
    """Expired or cancelled before it ran: resubmitted without counting an attempt."""


class Batches:
    """The batch calls as every provider answers them: with no batch API (`batch_limits`
    None), each raises; the executor asks only providers whose `batch_limits` is set."""

    batch_limits: ClassVar[tuple[int, int] | None] = None
    """(requests, bytes) one batch may hold at most, from the provider's documentation."""

    def batch_entry(self, custom_id: str, request: Request) -> dict[str, Any]:
        """One request as the provider's batch input takes it."""
        raise NotImplementedError(f"{type(self).__name__} has no batch API")

    def batch_group(self, request: Request) -> str:
        """Requests of different groups never share a batch (OpenAI: one model per file)."""
        return ""

    async def submit_batch(
        self, entries: Iterable[dict[str, Any]], metadata: dict[str, str]
    ) -> str:
        """Create a batch of `batch_entry` dicts; return the provider's batch id. The entries
        are built as they are read: iterate once, and hold them only if the API needs to."""
        raise NotImplementedError(f"{type(self).__name__} has no batch API")

    async def find_batch(
        self, metadata: dict[str, str], requests: int, created_after: float, known: set[str]
    ) -> str | None:
        """The id of a batch this run submitted but never recorded (a crash right after the
        provider accepted it), or None if the provider has none."""
        raise NotImplementedError(f"{type(self).__name__} has no batch API")

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        """The batch's state now: whether it has ended, and why if early."""
        raise NotImplementedError(f"{type(self).__name__} has no batch API")

    async def batch_results(self, batch_id: str) -> list[BatchOutcome]:
        """Outcomes of an ended batch; requests it does not mention are resubmitted."""
        raise NotImplementedError(f"{type(self).__name__} has no batch API")

    async def cancel_batch(self, batch_id: str) -> None:
        """Ask the provider to stop the batch; what ran is still read by `batch_results`."""
        raise NotImplementedError(f"{type(self).__name__} has no batch API")


class BatchAPI(Batches, ABC):
    """Inherit beside `Provider` (`class P(Provider, BatchAPI)`) for a service with a batch
    API: set `batch_limits` and implement the six hooks, which are abstract here."""

    batch_limits: ClassVar[tuple[int, int] | None]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.batch_limits is None:
            raise TypeError(f"{cls.__name__}: a BatchAPI sets batch_limits (requests, bytes)")

    @abstractmethod
    def batch_entry(self, custom_id: str, request: Request) -> dict[str, Any]: ...

    @abstractmethod
    async def submit_batch(
        self, entries: Iterable[dict[str, Any]], metadata: dict[str, str]
    ) -> str: ...

    @abstractmethod
    async def find_batch(
        self, metadata: dict[str, str], requests: int, created_after: float, known: set[str]
    ) -> str | None: ...

    @abstractmethod
    async def poll_batch(self, batch_id: str) -> BatchStatus: ...

    @abstractmethod
    async def batch_results(self, batch_id: str) -> list[BatchOutcome]: ...

    @abstractmethod
    async def cancel_batch(self, batch_id: str) -> None: ...
