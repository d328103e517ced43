"""The `hf/<hub-id-or-path>` provider: open-weight models on transformers, on this machine.

Install with `pip install torch==2.13.0` (or the build for your accelerator) and then
`pip install 'trialrun[local]'`. The model is loaded from a folder or the Hugging Face
cache, never downloaded unless `options.download: true` (trialrun.local.models); device
and dtype are chosen there and overridable with `options.device` / `options.dtype`.

- **Batching.** Concurrent `generate` calls are gathered for `gather_ms` (5 ms) into one
  left-padded batch of at most `batch_size` (8) requests with the same `max_tokens`, then
  each is answered; one batch runs on the device at a time, on one worker thread.
  `trialrun.local.generation` states what is bit-reproducible across batch compositions.
- **Memory.** At most `resident` (1) local models in the process (trialrun.local.residency):
  the real-time executor holds this provider's lane open while its model's trials run
  (`lane`), loading it on entry and freeing it on exit, so the next model loads after.
- **Out of memory.** A batch that runs out of CUDA memory is split in halves, each retried,
  and `batch_size` halves for the rest of the run; a single request that still does not fit
  fails its trial (a final error) and the run goes on.
- **Params.** temperature (0 = greedy), top_p, top_k, max_tokens (default 512), seed,
  logprobs / top_logprobs; stop, penalties, n and min_p are not sent (the run warns).
- **Exclusive use.** `run_exclusive(model, fn)` runs `fn(loaded)` on the model's worker
  thread between batches, so a trial function's steering hooks never reach another trial's
  batch (trialrun.local.steering).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from trialrun.errors import ConfigError, ProviderError
from trialrun.hashing import canonical
from trialrun.local.residency import ResidentLanes
from trialrun.providers.base import LocalProvider
from trialrun.providers.registry import provider
from trialrun.types import Request, Response, Usage

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_MAX_TOKENS = 512


@dataclass
class _Pending:
    row: Any
    key: str
    future: asyncio.Future[Any]
    queued_at: float = field(default_factory=time.monotonic)


class OutOfMemory(ProviderError):
    """One request alone does not fit in the device's memory."""


@provider("hf")
class HfProvider(ResidentLanes, LocalProvider):
    name = "hf"
    sdk = "transformers"
    extra = "local"

    def __init__(
        self,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        gather_ms: float = 5.0,
        resident: int = 1,
        download: bool = False,
        api_key: str | None = None,
        base_url: str | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        _require_sdk()
        if batch_size < 1 or resident < 1:
            raise ConfigError("hf options: batch_size and resident must be at least 1")
        self.device, self.dtype, self.download = device, dtype, download
        self.batch_size, self.gather_s = int(batch_size), float(gather_ms) / 1000
        self.resident = int(resident)
        self.oom_splits = 0
        self._loaded: Any = None
        self._queue: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None
        self._device_lock: asyncio.Lock | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="trialrun-hf")

    # -- facts -----------------------------------------------------------------------------

    def max_concurrency(self) -> int:
        return self.batch_size * 2  # one batch running, the next one gathering

    def check_model(self, model: str) -> None:
        from trialrun.local.models import check_source

        check_source(model, self.download)

    # -- residency -------------------------------------------------------------------------

    async def _load(self) -> None:
        from trialrun.local.models import load

        assert self._holder is not None
        loop = asyncio.get_running_loop()
        call = partial(load, self._holder.name, self.device, self.dtype, self.download)
        self._loaded = await loop.run_in_executor(self._thread, call)

    async def _free(self) -> None:
        from trialrun.local.models import free

        loaded, self._loaded = self._loaded, None
        await asyncio.get_running_loop().run_in_executor(self._thread, free, loaded)

    def resident_model(self, model: str) -> Any:
        """The loaded model (a `LoadedModel`) when `model` is loaded now, else None."""
        holder = self._holder
        if holder is None or holder.name != model:
            return None
        return self._loaded

    async def run_exclusive(self, model: str, fn: Callable[[Any], T]) -> T:
        """`fn(loaded)` on the model's worker thread with no batch running (for trial
        functions that hook the model: trialrun.local.steering)."""
        from trialrun.local.residency import RESIDENCY

        holder = await self._use(model)
        try:
            async with self._lock():
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._thread, fn, self._loaded)
        finally:
            RESIDENCY.done(holder)

    def _lock(self) -> asyncio.Lock:
        if self._device_lock is None:
            self._device_lock = asyncio.Lock()
        return self._device_lock

    # -- generation ------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        from trialrun.local.residency import RESIDENCY

        holder = await self._use(request.model)
        try:
            loaded = self._loaded
            row = _row(loaded, request)
            key = canonical([row.max_tokens])
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._queue.append(_Pending(row, key, future))
            if self._drainer is None or self._drainer.done():
                self._drainer = asyncio.create_task(self._drain())
            result = await future
        finally:
            RESIDENCY.done(holder)
        return Response(
            text=result.text,
            usage=Usage(input=result.input_tokens, output=result.output_tokens),
            finish_reason=result.finish_reason,
            logprobs=result.logprobs,
            served_model=loaded.served_model,
            cost_usd=0.0,
        )

    async def _drain(self) -> None:
        """Answer the queue batch by batch, gathering `gather_s` before each."""
        while self._queue:
            await asyncio.sleep(self.gather_s)
            batch = self._take()
            if not batch:
                continue
            async with self._lock():
                loop = asyncio.get_running_loop()
                rows = [p.row for p in batch]
                try:
                    results = await loop.run_in_executor(self._thread, self._run_rows, rows)
                except Exception as exc:  # a bug or a broken model: these requests fail
                    results = [exc] * len(batch)
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():  # timed out and cancelled meanwhile
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)

    def _take(self) -> list[_Pending]:
        """The oldest live request and up to `batch_size - 1` more with its key."""
        self._queue = [p for p in self._queue if not p.future.done()]
        if not self._queue:
            return []
        key = self._queue[0].key
        batch = [p for p in self._queue if p.key == key][: self.batch_size]
        taken = set(map(id, batch))
        self._queue = [p for p in self._queue if id(p) not in taken]
        return batch

    def _run_rows(self, rows: list[Any]) -> list[Any]:
        """The rows' results (on the worker thread); out of memory: halves, then one by one."""
        from trialrun.local.generation import generate_batch
        from trialrun.local.models import free, is_out_of_memory

        try:
            results: list[Any] = generate_batch(self._loaded, rows)
            return results
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        free(None)  # empty the CUDA cache before trying smaller
        if len(rows) == 1:
            return [OutOfMemory("out of memory on one request alone", kind="final")]
        half = len(rows) // 2
        self.batch_size = max(1, min(self.batch_size, half))
        self.oom_splits += 1
        log.warning(
            "hf: out of memory at batch %d; retrying as %d + %d", len(rows), half, len(rows) - half
        )
        return self._run_rows(rows[:half]) + self._run_rows(rows[half:])

    async def aclose(self) -> None:
        from trialrun.local.residency import RESIDENCY

        if self._holder is not None:
            await RESIDENCY.release(self._holder)
        self._thread.shutdown(wait=False)


def _row(loaded: Any, request: Request) -> Any:
    """The request as a generation row: prompt tokens and sampling settings."""
    from trialrun.local.generation import Row, render_prompt

    params = request.params
    top = params.get("top_logprobs")
    top_logprobs = int(top) if top else (1 if params.get("logprobs") else 0)
    seed = params.get("seed")
    return Row(
        prompt_ids=render_prompt(loaded.tokenizer, request.messages),
        max_tokens=int(params.get("max_tokens") or DEFAULT_MAX_TOKENS),
        temperature=float(params.get("temperature") or 0.0),
        top_p=None if params.get("top_p") is None else float(params["top_p"]),
        top_k=None if params.get("top_k") is None else int(params["top_k"]),
        seed=int(seed) if seed is not None else random.getrandbits(63),
        top_logprobs=top_logprobs,
    )


def _require_sdk() -> None:
    """Refuse early, without importing torch (seconds), when the local extra is missing."""
    if importlib.util.find_spec("torch") is None:
        raise ConfigError(
            "the 'hf' provider needs PyTorch: install the build for your machine first "
            "(CPU: pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu), "
            "then pip install 'trialrun[local]'"
        )
    if importlib.util.find_spec("transformers") is None:
        raise HfProvider.missing_sdk()
