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

import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, ExitStack
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

import orjson

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
        are built as they are read: iterate once, writing them to a temporary file where the
        API takes a file, and hold them only if it takes them in the body."""
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

    def batch_results(self, batch_id: str) -> AsyncIterator[BatchOutcome]:
        """Outcomes of an ended batch, yielded as they are read (an async generator: a
        results file is streamed to a temporary file, then read a line at a time), so the
        executor stores them in bounded chunks; requests it does not mention are resubmitted."""
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
    def batch_results(self, batch_id: str) -> AsyncIterator[BatchOutcome]: ...

    @abstractmethod
    async def cancel_batch(self, batch_id: str) -> None: ...


def spool_jsonl(entries: Iterable[dict[str, Any]]) -> IO[bytes]:
    """The entries as JSON lines in an anonymous temporary file (in `TMPDIR`), rewound:
    written one at a time, never all held. The caller closes it, which deletes it."""
    with ExitStack() as closing_on_error:
        spool = closing_on_error.enter_context(tempfile.TemporaryFile())
        for entry in entries:
            spool.write(orjson.dumps(entry))
            spool.write(b"\n")
        spool.seek(0)
        closing_on_error.pop_all()
    return spool


def spool_json_object(key: str, entries: Iterable[dict[str, Any]]) -> IO[bytes]:
    """`{key: [entries]}` as JSON in an anonymous temporary file, at its end (its `tell()` is
    its size): written an entry at a time, never all held. The caller closes it."""
    with ExitStack() as closing_on_error:
        spool = closing_on_error.enter_context(tempfile.TemporaryFile())
        spool.write(b"{" + orjson.dumps(key) + b":[")
        for number, entry in enumerate(entries):
            spool.write(b"," + orjson.dumps(entry) if number else orjson.dumps(entry))
        spool.write(b"]}")
        closing_on_error.pop_all()
    return spool


async def read_chunks(spool: IO[bytes], size: int = 1 << 20) -> AsyncIterator[bytes]:
    """A file's bytes from where it stands, `size` at a time: a request body to stream."""
    while chunk := spool.read(size):
        yield chunk


async def spool_download(streaming: AbstractAsyncContextManager[Any]) -> IO[bytes]:
    """A download (an SDK's `with_streaming_response` call, whose response has
    `iter_bytes()`) written to an anonymous temporary file as it arrives; the caller closes
    it. The connection is released before the first line is read."""
    with ExitStack() as closing_on_error:
        spool = closing_on_error.enter_context(tempfile.TemporaryFile())
        async with streaming as response:
            async for chunk in response.iter_bytes():
                spool.write(chunk)
        closing_on_error.pop_all()
    return spool


def read_jsonl(spool: IO[bytes]) -> Iterator[Any]:
    """Each line of a JSONL file from its start, parsed, one at a time; blank lines skipped."""
    spool.seek(0)
    for line in spool:
        if line.strip():
            yield orjson.loads(line)
