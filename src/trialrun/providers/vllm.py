"""The `vllm/<hub-id-or-path>` provider: open-weight models on vLLM's offline engine, for GPU
throughput, with the requests and records of `hf/` (trialrun.providers.hf).

Install vLLM's build for your GPU with `pip install 'trialrun[vllm]'` (vllm>=0.11: the V1
engine only, whose logprobs are of the raw logits, and the `logprobs_mode` engine argument).
The model comes from a folder or the Hugging Face cache as for `hf/`, never downloaded unless
`options.download: true`: a cached hub id is handed to vLLM as its snapshot folder.

- **Requests.** Each trial's messages are one conversation of an `LLM.chat` call, with its
  own `SamplingParams`: temperature (0 or none: greedy), top_p, top_k, max_tokens (default
  512), seed, logprobs / top_logprobs (`logprobs=k`, `logprobs: true` alone is k = 1); stop,
  penalties, n and min_p are not sent (the run warns). Every field is set, so the model's own
  sampling defaults never apply (vLLM uses them only for calls without SamplingParams).
- **Prompt.** vLLM renders the tokenizer's chat template with the generation prompt, as
  `hf/` does. A tokenizer without one gets `PLAIN_TEMPLATE` (`role: content` lines and a
  last `assistant:` line); unlike `hf/`'s plain prompt it has no BOS token.
- **Batching.** Concurrent `generate` calls are gathered for `gather_ms` (5 ms) and up to
  `batch_size` (256) of them go to one `LLM.chat` call on the provider's worker thread (vLLM's
  LLM is synchronous); vLLM schedules them itself. One call runs at a time. When vLLM refuses
  a call (it checks every request before running any: one prompt over `max_model_len` fails
  them all), its requests are sent again one by one, so that only the refused one fails.
- **Records** are `hf/`'s: text, usage (the prompt's tokens; the generated tokens, the end
  token included), `finish_reason` stop or length, `served_model` (the folder's absolute path
  or `hub-id@commit`), `cost_usd` 0, and logprobs `{token, logprob, top: [{token, logprob}]}`
  per generated token but the end token, of the raw logits (trialrun sets `logprobs_mode:
  raw_logprobs`), the top ones in vLLM's rank order. Token strings are vLLM's per-token
  decoding (recent vLLM keeps a SentencePiece token's leading space, which `hf/` drops).
- **top_logprobs** is at most `max_logprobs` (20, vLLM's default; passed to the engine): a
  trial asking more fails in one line naming the option, before it reaches vLLM.
- **Memory.** One local model (`hf/` or `vllm/`) resident in the process at a time, in its
  lane (trialrun.local.residency): the engine starts when the lane does and is deleted when
  it ends (then gc and torch.cuda.empty_cache()), before the next model loads. vLLM does not
  always give the memory back inside the process (vllm-project/vllm issues #3281, #21073 with
  VLLM_ENABLE_V1_MULTIPROCESSING=0, #23793): if the next model then fails to start for lack
  of memory, run one model per process (one experiment each, or shards).
- **Options.** tensor_parallel_size (1), gpu_memory_utilization (0.9), dtype (auto),
  max_model_len (the model's), max_logprobs (20), download (false), batch_size, gather_ms,
  and `engine`: other keyword arguments for `vllm.LLM` (EngineArgs, e.g. enforce_eager).
- **Reproducibility.** Each trial's seed is its request's; vLLM does not promise the same
  tokens across batch compositions unless VLLM_BATCH_INVARIANT=1 (its reproducibility docs).
- **Not served:** steering, `ctx.exclusive`, `ctx.hf_model` / `ctx.tokenizer` (vLLM runs the
  model in its own engine, where trialrun cannot hook a layer: use an `hf/` entry of the same
  model), and `mode: batch` (no batch API).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from trialrun.errors import ConfigError, ProviderError, TrialrunError
from trialrun.local.residency import ResidentLanes
from trialrun.providers.base import LocalProvider
from trialrun.providers.registry import provider
from trialrun.types import Request, Response, Usage

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_MAX_TOKENS = 512
DEFAULT_MAX_LOGPROBS = 20
"""vLLM's own default for the engine's `max_logprobs`."""
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
"""The chat template of a tokenizer that has none: `role: content` lines, `assistant:`."""
STEERING_REFUSAL = (
    "vLLM runs the model in its own engine, where trialrun cannot hook a layer or run a pass "
    "of its own: use an hf/ entry of the same model for steering and ctx.exclusive"
)
SET_BY_TRIALRUN = frozenset(
    {
        "model",
        "tensor_parallel_size",
        "gpu_memory_utilization",
        "dtype",
        "max_model_len",
        "max_logprobs",
        "logprobs_mode",
    }
)


@dataclass
class _Pending:
    messages: list[dict[str, str]]
    sampling: Any
    future: asyncio.Future[Any]


@provider("vllm")
class VllmProvider(ResidentLanes, LocalProvider):
    name = "vllm"
    sdk = "vllm"
    extra = "vllm"
    steering_refusal = STEERING_REFUSAL
    load_verb = "start"

    def __init__(
        self,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
        max_model_len: int | None = None,
        max_logprobs: int = DEFAULT_MAX_LOGPROBS,
        download: bool = False,
        batch_size: int = 256,
        gather_ms: float = 5.0,
        engine: dict[str, Any] | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        if importlib.util.find_spec("vllm") is None:
            raise VllmProvider.missing_sdk()
        self.engine_args = _engine_args(
            tensor_parallel_size, gpu_memory_utilization, dtype, max_model_len, max_logprobs, engine
        )
        if batch_size < 1 or gather_ms < 0:
            raise ConfigError("vllm options: batch_size must be at least 1, gather_ms at least 0")
        self.max_logprobs = int(max_logprobs)
        self.download = download
        self.batch_size, self.gather_s = int(batch_size), float(gather_ms) / 1000
        self._llm: Any = None
        self._template: str | None = None
        self._served = ""
        self._queue: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="trialrun-vllm")

    # -- facts -----------------------------------------------------------------------------

    def max_concurrency(self) -> int:
        return self.batch_size * 2  # one call running, the next one gathering

    def check_model(self, model: str) -> None:
        from trialrun.local.models import check_source

        try:
            check_source(model, self.download)
        except ConfigError as exc:  # its message names the hf/ provider
            reason = str(exc).removeprefix(f"hf/{model}: ")
            raise ConfigError(f"vllm/{model}: {reason}") from None

    # -- residency -------------------------------------------------------------------------

    async def _load(self) -> None:
        assert self._holder is not None
        name = self._holder.name
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._start, name)

    def _start(self, name: str) -> None:
        """Start the engine for `name` (on the worker thread)."""
        from vllm import LLM

        source = _source(name, self.download)
        self._llm = LLM(model=source, **self.engine_args)
        tokenizer = self._llm.get_tokenizer()
        self._template = None if getattr(tokenizer, "chat_template", None) else PLAIN_TEMPLATE
        self._served = _served(name, source)

    async def _free(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._stop)

    def _stop(self) -> None:
        """Drop the engine and empty the CUDA cache (on the worker thread)."""
        self._llm = None
        gc.collect()
        torch = sys.modules.get("torch")  # vLLM has imported it; never import it here
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def resident_model(self, model: str) -> Any:
        """Refused: vLLM's model lives in its engine (see STEERING_REFUSAL)."""
        raise TrialrunError(f"vllm/{model}: {STEERING_REFUSAL}")

    async def run_exclusive(self, model: str, fn: Callable[[Any], T]) -> T:
        """Refused: vLLM's model lives in its engine (see STEERING_REFUSAL)."""
        raise TrialrunError(f"vllm/{model}: {STEERING_REFUSAL}")

    # -- generation ------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        from trialrun.local.residency import RESIDENCY

        sampling = self._sampling(request.params)
        holder = await self._use(request.model)
        try:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._queue.append(_Pending(request.messages, sampling, future))
            if self._drainer is None or self._drainer.done():
                self._drainer = asyncio.create_task(self._drain())
            output = await future
            served = self._served
        finally:
            RESIDENCY.done(holder)
        return _response(output, sampling, served)

    def _sampling(self, params: dict[str, Any]) -> Any:
        """The request's SamplingParams; a value vLLM would refuse fails this trial only."""
        from vllm import SamplingParams

        top = params.get("top_logprobs")
        count = int(top) if top else (1 if params.get("logprobs") else None)
        if count is not None and count > self.max_logprobs:
            raise ProviderError(
                f"top_logprobs {count} is above vLLM's max_logprobs ({self.max_logprobs}): "
                "lower it, or set the model's options.max_logprobs",
                kind="final",
            )
        fields: dict[str, Any] = {
            "n": 1,
            "temperature": float(params.get("temperature") or 0.0),
            "max_tokens": int(params.get("max_tokens") or DEFAULT_MAX_TOKENS),
            "seed": None if params.get("seed") is None else int(params["seed"]),
            "logprobs": count,
        }
        if params.get("top_p") is not None:
            fields["top_p"] = float(params["top_p"])
        if params.get("top_k") is not None:
            fields["top_k"] = int(params["top_k"])
        try:
            return SamplingParams(**fields)
        except ValueError as exc:
            raise ProviderError(
                f"vllm refused the params: {_one_line(exc)}", kind="final"
            ) from None

    async def _drain(self) -> None:
        """Answer the queue call by call, gathering `gather_s` before each."""
        loop = asyncio.get_running_loop()
        while self._queue:
            await asyncio.sleep(self.gather_s)
            self._queue = [p for p in self._queue if not p.future.done()]
            batch, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size :]
            if not batch:
                continue
            conversations = [p.messages for p in batch]
            sampling = [p.sampling for p in batch]
            try:
                results = await loop.run_in_executor(
                    self._thread, self._chat, conversations, sampling
                )
            except Exception as exc:  # a bug: these requests fail
                results = [exc] * len(batch)
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():  # timed out and cancelled meanwhile
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)

    def _chat(self, conversations: list[Any], sampling: list[Any]) -> list[Any]:
        """One `LLM.chat` call (on the worker thread); refused, its requests one by one."""
        try:
            outputs = self._llm.chat(
                conversations, sampling, use_tqdm=False, chat_template=self._template
            )
            return list(outputs)
        except Exception as exc:
            if len(conversations) == 1:
                message = f"vllm refused the request: {_one_line(exc)}"
                return [ProviderError(message, kind="final")]
            log.warning(
                "vllm: a call of %d requests failed (%s); sending them one by one",
                len(conversations),
                _one_line(exc),
            )
        return [self._chat([c], [s])[0] for c, s in zip(conversations, sampling, strict=True)]

    async def aclose(self) -> None:
        from trialrun.local.residency import RESIDENCY

        if self._holder is not None:
            await RESIDENCY.release(self._holder)
        self._thread.shutdown(wait=False)


def _engine_args(
    tensor_parallel_size: int,
    gpu_memory_utilization: float,
    dtype: str,
    max_model_len: int | None,
    max_logprobs: int,
    engine: dict[str, Any] | None,
) -> dict[str, Any]:
    """The keyword arguments of `vllm.LLM` besides the model, checked (one line each)."""
    if not isinstance(tensor_parallel_size, int) or tensor_parallel_size < 1:
        raise ConfigError("vllm options.tensor_parallel_size: expected an integer of at least 1")
    if not 0 < float(gpu_memory_utilization) <= 1:
        raise ConfigError("vllm options.gpu_memory_utilization: expected a number in (0, 1]")
    if dtype not in DTYPES:
        raise ConfigError(f"vllm options.dtype: expected one of {', '.join(DTYPES)}")
    if max_model_len is not None and (not isinstance(max_model_len, int) or max_model_len < 1):
        raise ConfigError("vllm options.max_model_len: expected an integer of at least 1")
    if not isinstance(max_logprobs, int) or max_logprobs < 0:
        raise ConfigError("vllm options.max_logprobs: expected an integer of at least 0")
    taken = sorted(SET_BY_TRIALRUN & set(engine or {}))
    if taken:
        raise ConfigError(
            f"vllm options.engine: {', '.join(taken)} set by trialrun; use the option itself"
        )
    args: dict[str, Any] = {
        "tensor_parallel_size": tensor_parallel_size,
        "gpu_memory_utilization": float(gpu_memory_utilization),
        "dtype": dtype,
        "max_logprobs": max_logprobs,
        "logprobs_mode": "raw_logprobs",
        **(engine or {}),
    }
    if max_model_len is not None:
        args["max_model_len"] = max_model_len
    return args


def _source(name: str, download: bool) -> str:
    """What vLLM loads: a folder's path, a cached hub id's snapshot folder (so that vLLM
    never reaches the network), or, with `download`, the hub id."""
    from trialrun.local.models import check_source, is_path

    check_source(name, download)
    if is_path(name):
        return str(Path(name).expanduser().resolve())
    snapshot = _snapshot(name)
    if snapshot is not None:
        return str(snapshot)
    return name


def _snapshot(hub_id: str) -> Path | None:
    """The cached snapshot folder of `hub_id`, if the Hugging Face cache has one."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _served(name: str, source: str) -> str:
    """As `hf/` records it: the folder's absolute path, or `hub-id@commit`."""
    from trialrun.local.models import is_path

    if is_path(name):
        return source
    snapshot = Path(source)
    return f"{name}@{snapshot.name}" if snapshot.parent.name == "snapshots" else name


def _response(output: Any, sampling: Any, served: str) -> Response:
    """A RequestOutput as trialrun's Response, shaped as `hf/`'s."""
    completion = output.outputs[0]
    tokens = list(completion.token_ids)
    finish = completion.finish_reason
    if finish not in ("stop", "length"):
        raise ProviderError(
            f"vllm ended the request with finish_reason {finish!r}", kind="retryable"
        )
    ended_by_token = finish == "stop" and not isinstance(completion.stop_reason, str)
    logprobs = None
    if sampling.logprobs is not None:
        steps = list(completion.logprobs or [])
        kept = len(tokens) - 1 if ended_by_token else len(tokens)
        logprobs = [
            _step(position, token, sampling.logprobs)
            for position, token in zip(steps[:kept], tokens[:kept], strict=True)
        ]
    return Response(
        text=completion.text,
        usage=Usage(input=len(output.prompt_token_ids or []), output=len(tokens)),
        finish_reason=finish,
        logprobs=logprobs,
        served_model=served,
        cost_usd=0.0,
    )


def _step(position: dict[int, Any], token: int, k: int) -> dict[str, Any]:
    """One position's `{token, logprob, top}`: the sampled token, then the k best by rank."""
    chosen = position[token]
    ranked = sorted(position.values(), key=lambda p: (p.rank or sys.maxsize, -p.logprob))
    top = [{"token": p.decoded_token or "", "logprob": p.logprob} for p in ranked[:k]]
    return {"token": chosen.decoded_token or "", "logprob": chosen.logprob, "top": top}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
