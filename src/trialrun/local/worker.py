"""A Ray actor holding one local model: what `executor: {ray: ...}` runs on each GPU.

`ModelWorker` is a plain class; `trialrun.local.cluster` wraps it with `ray.remote` when it
starts actors, so this module imports no Ray until then. Inside the actor, an ordinary
`hf/` provider (trialrun.providers.hf) holds the model in a lane for the actor's life:
concurrent `generate` calls from the driver are gathered into batches there exactly as in
one process, and `exclusive` runs a trial function's hooked forward pass between batches.
The actor never touches the run's store; it returns responses and the driver writes them.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractAsyncContextManager
from typing import Any

from trialrun.errors import ProviderError
from trialrun.providers import registry
from trialrun.types import Request, Response


class ModelWorker:
    """One model, loaded by `load`, answering `generate` and `exclusive` until killed."""

    def __init__(self, provider: str, model: str, settings: dict[str, Any]) -> None:
        self.model = model
        self.provider = registry.create(provider, **settings)
        self._lane: AbstractAsyncContextManager[None] | None = None

    async def load(self) -> dict[str, Any]:
        """Load the model (once); where it runs: node, pid, GPU ids, device, seconds."""
        started = time.monotonic()
        if self._lane is None:
            self._lane = self.provider.lane(self.model)
            await self._lane.__aenter__()
        failed = getattr(self.provider, "load_error", None)
        if failed is not None:
            raise ProviderError(f"{self.model} did not load: {failed}", kind="final")
        loaded = getattr(self.provider, "resident_model", lambda _: None)(self.model)
        return {
            "node": _node_address(),
            "pid": os.getpid(),
            "gpus": _gpu_ids(),
            "device": str(getattr(loaded, "device", "")),
            "served_model": getattr(loaded, "served_model", self.model),
            "load_s": round(time.monotonic() - started, 2),
        }

    async def generate(self, request: Request) -> Response:
        return await self.provider.generate(request)

    async def exclusive(self, fn: Any) -> Any:
        """`fn(loaded)` with no batch running (the provider's `run_exclusive`); tensors in
        the result come back on the CPU, so a driver without a GPU can read them."""
        result = await self.provider.run_exclusive(self.model, fn)  # type: ignore[attr-defined]
        return _to_cpu(result)

    async def close(self) -> None:
        """Free the model (the actor is killed right after; its exit frees the rest)."""
        if self._lane is not None:
            lane, self._lane = self._lane, None
            await lane.__aexit__(None, None, None)
        await self.provider.aclose()


def _node_address() -> str:
    import ray

    return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]


def _gpu_ids() -> list[str]:
    import ray

    return [str(gpu) for gpu in ray.get_gpu_ids()]


def _to_cpu(value: Any) -> Any:
    """`value` with every torch tensor in it (at the top, or in a list, tuple or dict) moved
    to the CPU."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(item) for item in value)
    return value
