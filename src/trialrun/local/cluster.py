"""Local-model trials on Ray actors (`executor: {ray: ...}`): the driver's side.

Under `executor.ray`, each `hf/` model entry is answered by `RayModels` instead of an
in-process `hf` provider. The real-time executor is unchanged: it still pages trials, holds
each model's lane, renders, caches, retries and commits, and stays the store's only
writer; API trials never leave its event loop. Only the model calls go to the cluster.

- **Actors.** A lane opens a pool of `ModelWorker` actors (trialrun.local.worker) for its
  model, each holding one loaded copy with `gpus_per_actor` GPUs (1 where the cluster has
  GPUs) and `cpus_per_actor` CPUs; `actors` of them, by default one per free share of the
  cluster's GPUs. Ray's scheduler is the residency rule: an actor that cannot get its GPU
  waits until another model's lane ends and kills its actors, which exit and so free their
  GPU memory completely (what one process cannot promise).
- **Requests.** Each `generate` goes to the pool's least busy actor, where the `hf`
  provider gathers concurrent requests into batches as it does in one process.
- **Lost actors.** A request whose actor dies (a preempted node, an OOM kill) is sent
  again to a replacement actor, so its trial is redone, not failed; after `max_restarts`
  replacements in a lane the pool gives up and the lane's remaining calls fail (final).
  Every load, loss and replacement is written to the run's events with node, pid and GPUs.
- **Trial functions.** `ctx.exclusive(fn)` ships `fn` to an actor (cloudpickle; a function
  from the config's folder is sent by value) and brings tensors back on the CPU;
  `ctx.hf_model` and `ctx.tokenizer` do not exist in the driver and say so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from trialrun.config import RayConfig
from trialrun.errors import ConfigError, ProviderError
from trialrun.providers.base import LocalProvider
from trialrun.types import Request, Response

log = logging.getLogger(__name__)
T = TypeVar("T")
FORWARDED_ENV = (
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TRANSFORMERS_CACHE",
)
"""Environment variables the actors get from the driver (where models are, offline or not)."""
CONNECT_TIMEOUT_S = 10.0
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
"""`address: local`: the object store only carries requests and responses."""


def require_ray() -> None:
    """A one-line ConfigError when Ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("executor.ray needs Ray: pip install 'trialrun[ray]'")


def connect(config: RayConfig) -> bool:
    """Join (or, for `local`, start) the cluster unless this process already has; whether
    this call started the connection (so `disconnect` should end it)."""
    import ray

    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if config.address == "local":
        options.update(
            include_dashboard=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            _node_ip_address="127.0.0.1",
        )
        ray.init(**options)
    else:
        _check_answers(config.address)
        ray.init(address=config.address, **options)
    return True


def _check_answers(address: str) -> None:
    """Fail in one line when nothing listens at a `HOST:PORT` address (Ray itself would
    retry for many minutes); `auto` and `ray://` addresses are Ray's to find."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            return
    except (OSError, ValueError) as exc:
        raise ProviderError(
            f"executor.ray.address {address}: no Ray cluster answers there ({exc}); "
            "check it with `ray status --address ADDRESS`",
            kind="final",
        ) from None


@dataclass(eq=False)
class _Actor:
    handle: Any
    index: int
    busy: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    ready: asyncio.Future[None] | None = None


class _Pool:
    """The actors of one model's lane."""

    def __init__(self, owner: RayModels, model: str) -> None:
        self.owner, self.model = owner, model
        self.actors: list[_Actor] = []
        self.started = 0
        self.lost = 0
        self.closed = False
        self.failure = "its Ray actors are gone"

    async def open(self, count: int) -> None:
        self.actors = [self._start() for _ in range(count)]
        await asyncio.gather(*(self._wait_ready(actor) for actor in self.actors))

    def _start(self) -> _Actor:
        import ray

        from trialrun.local.worker import ModelWorker

        config = self.owner.config
        remote = ray.remote(ModelWorker).options(
            num_gpus=self.owner.gpus_per_actor(),
            num_cpus=config.cpus_per_actor,
            max_concurrency=1000,
            max_restarts=0,
            runtime_env={"env_vars": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}},
        )
        self.started += 1
        handle = remote.remote(self.owner.provider_name, self.model, self.owner.settings)
        return _Actor(handle, self.started)

    async def _wait_ready(self, actor: _Actor) -> None:
        if actor.ready is None:
            actor.ready = asyncio.ensure_future(self._load(actor))
        await asyncio.shield(actor.ready)

    async def _load(self, actor: _Actor) -> None:
        try:
            actor.info = await actor.handle.load.remote()
        except BaseException as exc:
            raise _unwrap(exc) from None
        self.owner.event(
            "ray_actor",
            f"hf/{self.model}: actor {actor.index} loaded on {actor.info['node']} "
            f"(pid {actor.info['pid']}, GPUs {actor.info['gpus'] or 'none'}, "
            f"{actor.info['device']}) in {actor.info['load_s']} s",
        )

    async def call(self, method: str, *args: Any) -> Any:
        """`method(*args)` on the least busy live actor; on a lost actor, again on its
        replacement, up to `max_restarts` replacements for the pool."""
        import ray

        while True:
            if self.closed or not self.actors:
                raise ProviderError(f"hf/{self.model}: {self.failure}", kind="final")
            actor = min(self.actors, key=lambda a: a.busy)
            actor.busy += 1
            try:
                await self._wait_ready(actor)
                return await getattr(actor.handle, method).remote(*args)
            except ray.exceptions.RayActorError as exc:
                if exc.actor_init_failed:  # it would fail the same way on any node
                    raise ProviderError(f"hf/{self.model}: {exc}", kind="final") from None
                self._replace(actor, exc)
            except BaseException as exc:
                raise _unwrap(exc) from None
            finally:
                actor.busy -= 1

    def _replace(self, actor: _Actor, exc: BaseException) -> None:
        """Put a new actor where a lost one was (once, however many calls saw it die)."""
        import ray

        if actor not in self.actors:
            return
        self.actors.remove(actor)
        self.lost += 1
        where = f"on {actor.info.get('node', '?')}, pid {actor.info.get('pid', '?')}"
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if self.lost > self.owner.config.max_restarts:
            note = (
                f"hf/{self.model}: actor {actor.index} lost ({where}: {reason}); "
                f"{self.lost - 1} already replaced (max_restarts), so its calls fail"
            )
            self.owner.event("ray_actor_lost", note)
            self.closed = True
            self.failure = f"{self.lost} Ray actors lost (max_restarts: {self.lost - 1})"
            return
        ray.kill(actor.handle, no_restart=True)
        replacement = self._start()
        self.actors.append(replacement)
        self.owner.event(
            "ray_actor_lost",
            f"hf/{self.model}: actor {actor.index} lost ({where}: {reason}); its requests "
            f"go to actor {replacement.index}",
        )

    async def close(self) -> None:
        import ray

        self.closed = True
        actors, self.actors = self.actors, []
        for actor in actors:
            try:
                await asyncio.wait_for(actor.handle.close.remote(), timeout=30)
            except Exception as exc:  # a dead or stuck actor: killing it is enough
                log.debug("closing actor %d: %s", actor.index, exc)
            ray.kill(actor.handle, no_restart=True)


class RayModels(LocalProvider):
    """Stands for the `hf` provider of one model entry and sends its calls to Ray actors."""

    name = "hf"
    sdk = "ray"
    extra = "ray"

    def __init__(self, config: RayConfig, provider: str, settings: dict[str, Any]) -> None:
        super().__init__()
        require_ray()
        self.config = config
        self.provider_name = provider
        self.settings = settings
        self.batch_size = int(settings.get("batch_size", 8))
        self._pools: dict[str, _Pool] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._connected = False
        self._started = False

    # -- facts -----------------------------------------------------------------------------

    def max_concurrency(self) -> int:
        return self.batch_size * 2 * max(1, self.config.actors or self._gpu_actors())

    def check_model(self, model: str) -> None:
        from trialrun.local.models import check_source

        check_source(model, bool(self.settings.get("download", False)))

    def event(self, kind: str, note: str) -> None:
        log.info("%s", note)
        if self.notify is not None:
            self.notify(kind, note)

    # -- the cluster -----------------------------------------------------------------------

    def _connect(self) -> None:
        if not self._connected:
            self._started = connect(self.config)
            self._connected = True

    def gpus_per_actor(self) -> float:
        if self.config.gpus_per_actor is not None:
            return self.config.gpus_per_actor
        return 1.0 if self._cluster_gpus() >= 1 else 0.0

    def _cluster_gpus(self) -> float:
        import ray

        if not ray.is_initialized():
            return 0.0
        return float(ray.cluster_resources().get("GPU", 0.0))  # type: ignore[no-untyped-call]

    def _gpu_actors(self) -> int:
        share = self.config.gpus_per_actor
        gpus = self._cluster_gpus()
        if not gpus or share == 0:
            return 1
        return max(1, int(gpus // (share or 1.0)))

    def _check_fits(self) -> None:
        gpus, share = self._cluster_gpus(), self.gpus_per_actor()
        if share > gpus:
            raise ProviderError(
                f"executor.ray: an actor asks for {share:g} GPUs and the cluster has "
                f"{gpus:g}; lower gpus_per_actor (0 runs on CPU)",
                kind="final",
            )

    async def _pool(self, model: str) -> _Pool:
        lock = self._opening.setdefault(model, asyncio.Lock())
        async with lock:
            pool = self._pools.get(model)
            if pool is None:
                self._connect()
                self._check_fits()
                pool = _Pool(self, model)
                try:
                    await pool.open(self.config.actors or self._gpu_actors())
                except BaseException:
                    await pool.close()
                    raise
                self._pools[model] = pool
            return pool

    @asynccontextmanager
    async def lane(self, model: str) -> AsyncIterator[None]:
        """Start the model's actors now (outside any request's timeout); kill them when the
        lane ends. A model that fails to load fails each of its trials, as in one process."""
        model = _absolute(model)
        try:
            await self._pool(model)
        except Exception as exc:
            self.event("ray_actor", f"hf/{model}: its Ray actors did not start: {exc}")
            self._pools[model] = _failed_pool(self, model, str(exc))
        try:
            yield
        finally:
            pool = self._pools.pop(model, None)
            if pool is not None:
                await pool.close()

    # -- calls -----------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        model = _absolute(request.model)
        pool = await self._pool(model)
        response: Response = await pool.call("generate", dataclasses.replace(request, model=model))
        return response

    async def run_exclusive(self, model: str, fn: Callable[[Any], T]) -> T:
        """`fn(loaded)` on one of the model's actors with no batch running there."""
        model = _absolute(model)
        _send_by_value(fn)
        pool = await self._pool(model)
        result: T = await pool.call("exclusive", fn)
        return result

    def resident_model(self, model: str) -> Any:
        raise ProviderError(
            f"hf/{model} is loaded on Ray actors, not in this process: use "
            "ctx.exclusive(fn) (fn gets the loaded model there) instead of ctx.hf_model "
            "or ctx.tokenizer",
            kind="final",
        )

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()
        if self._started:
            import ray

            await asyncio.get_running_loop().run_in_executor(None, ray.shutdown)
            self._started = self._connected = False


def _failed_pool(owner: RayModels, model: str, failure: str) -> _Pool:
    pool = _Pool(owner, model)
    pool.closed, pool.failure = True, f"did not start on Ray: {failure}"
    return pool


def _absolute(model: str) -> str:
    """A local folder as an absolute path: actors do not share the driver's working folder."""
    from trialrun.local.models import is_path

    if is_path(model) and not model.startswith("/"):
        return str(Path(model).expanduser().resolve())
    return model


def _send_by_value(fn: Any) -> None:
    """Let cloudpickle send `fn`'s module by value when actors cannot import it (a trial
    function's module, imported from the config's folder)."""
    module_name = getattr(fn, "__module__", None) or ""
    if module_name.split(".")[0] in ("trialrun", "builtins", "__main__"):
        return
    module = sys.modules.get(module_name)
    if module is None:
        return
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]


def _unwrap(exc: BaseException) -> BaseException:
    """The exception an actor raised, not Ray's wrapper around it."""
    import ray

    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
        return cause
    return exc
