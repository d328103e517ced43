"""At most N local models resident at once in this process, and their lanes one after another.

Two rules, process-wide (every run and provider in the process shares them):

- **Lanes.** The real-time executor holds a local model's lane open while it runs that
  model's trials (`Provider.lane`). At most `limit` local lanes are open at once; the others
  wait their turn. So a run's local trials are grouped by model: load, run them all, free,
  then the next model; never a swap per trial.
- **Models.** At most `limit` models are loaded. Loading one when the slots are full evicts
  an idle model (no batch running): first one whose lane is closed, then the least recently
  used. A model outside a lane (an `hf/` judge) therefore swaps with its graded model
  rather than wait for it forever; slow, never a deadlock.

`limit` is each holder's own (`options.resident` of an `hf/` entry); where holders disagree
the smallest one present wins. Waits poll every `POLL_S` seconds (cheap beside a model's load,
and indifferent to which event loop or thread waits). `HISTORY` keeps the last load and unload
events, which tests read to check that two models were never resident together.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import ClassVar

from trialrun.errors import ProviderError

log = logging.getLogger(__name__)

POLL_S = 0.02
HISTORY: deque[tuple[float, str, str]] = deque(maxlen=10_000)
"""(time, "load" | "unload", model) for the process's last 10,000 events."""


@dataclass(eq=False)
class Holder:
    """One provider's claim: its model's name, its limit, and what it is doing."""

    name: str
    free: Callable[[], Awaitable[None]]
    """Unloads the model (the provider's own: it runs where its model lives)."""
    limit: int = 1
    busy: int = 0
    """Batches (or exclusive calls) running on its model now."""
    loaded: bool = False
    used_at: float = field(default_factory=time.monotonic)


class Residency:
    """The process's open local lanes and loaded local models."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lanes: list[Holder] = []
        self._loaded: list[Holder] = []
        self._loading: list[Holder] = []

    @property
    def loaded(self) -> list[str]:
        with self._lock:
            return [h.name for h in self._loaded]

    async def open_lane(self, holder: Holder) -> None:
        """Wait until `holder` may run a lane."""
        while True:
            with self._lock:
                if len(self._lanes) < _limit(holder, self._lanes):
                    self._lanes.append(holder)
                    return
            await asyncio.sleep(POLL_S)

    def close_lane(self, holder: Holder) -> None:
        with self._lock:
            if holder in self._lanes:
                self._lanes.remove(holder)

    async def use(self, holder: Holder, load: Callable[[], Awaitable[None]]) -> None:
        """Mark `holder` busy with its model loaded: load it (after evicting idle models to
        make room) if it is not. Pair with `done`."""
        while True:
            victim = None
            with self._lock:
                if holder.loaded:
                    holder.busy += 1
                    holder.used_at = time.monotonic()
                    return
                if holder not in self._loading:
                    occupied = self._loaded + self._loading
                    if len(occupied) < _limit(holder, occupied):
                        self._loading.append(holder)
                        break
                    victim = self._victim()
                    if victim is not None:
                        self._loaded.remove(victim)
                        victim.loaded = False
            if victim is not None:
                await victim.free()
                HISTORY.append((time.time(), "unload", victim.name))
            else:
                await asyncio.sleep(POLL_S)
        try:
            await load()
        except BaseException:
            with self._lock:
                self._loading.remove(holder)
            raise
        HISTORY.append((time.time(), "load", holder.name))
        with self._lock:
            self._loading.remove(holder)
            self._loaded.append(holder)
            holder.loaded, holder.busy = True, holder.busy + 1
            holder.used_at = time.monotonic()

    def done(self, holder: Holder) -> None:
        with self._lock:
            holder.busy -= 1

    def _victim(self) -> Holder | None:
        idle = [h for h in self._loaded if h.busy == 0]
        idle.sort(key=lambda h: (h in self._lanes, h.used_at))
        return idle[0] if idle else None

    async def release(self, holder: Holder) -> None:
        """Free `holder`'s model now (its lane is over, or its provider closes); waits for
        its running batches to end first."""
        while True:
            with self._lock:
                if not holder.loaded:
                    return
                if holder.busy == 0:
                    self._loaded.remove(holder)
                    holder.loaded = False
                    break
            await asyncio.sleep(POLL_S)
        await holder.free()
        HISTORY.append((time.time(), "unload", holder.name))


def _limit(holder: Holder, others: list[Holder]) -> int:
    return max(1, min([holder.limit, *(h.limit for h in others)]))


RESIDENCY = Residency()
"""The one for this process."""


class ResidentLanes:
    """A local provider's side of these rules (`hf`, `vllm`): one model at a time in a
    holder, loaded when its lane opens (outside any request's timeout) and freed when it
    closes; a model that fails to load fails each call with the reason. The provider
    writes `_load` and `_free` (they run where its model lives) and sets `resident`."""

    name: ClassVar[str]
    resident: int = 1
    load_verb = "load"
    """`did not <verb>` in the error of a model that failed to load."""
    _holder: Holder | None = None
    _load_error: BaseException | None = None

    async def _load(self) -> None:
        raise NotImplementedError

    async def _free(self) -> None:
        raise NotImplementedError

    @property
    def load_error(self) -> BaseException | None:
        """Why the current model did not load in its lane, if it did not."""
        return self._load_error

    def _holder_for(self, model: str) -> Holder:
        if self._holder is None or self._holder.name != model:
            self._holder = Holder(model, self._free, self.resident)
            self._load_error = None
        return self._holder

    @asynccontextmanager
    async def lane(self, model: str) -> AsyncIterator[None]:
        """Hold a resident slot for `model`'s lane: load it now, free it when the lane ends."""
        holder = self._holder_for(model)
        await RESIDENCY.open_lane(holder)
        try:
            try:
                await RESIDENCY.use(holder, self._load)
                RESIDENCY.done(holder)
            except Exception as exc:
                self._load_error = exc
                log.warning("%s/%s did not %s: %s", self.name, model, self.load_verb, exc)
            yield
        finally:
            await RESIDENCY.release(holder)
            RESIDENCY.close_lane(holder)

    async def _use(self, model: str) -> Holder:
        """`model` loaded and marked busy (pair with `RESIDENCY.done`)."""
        holder = self._holder_for(model)
        if self._load_error is not None:
            reason = " ".join(str(self._load_error).split()) or type(self._load_error).__name__
            raise ProviderError(
                f"{self.name}/{model} did not {self.load_verb}: {reason[:300]}", kind="final"
            )
        await RESIDENCY.use(holder, self._load)
        return holder
