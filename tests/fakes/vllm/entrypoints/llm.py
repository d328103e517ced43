"""vllm/entrypoints/llm.py's `LLM`: the constructor, `get_tokenizer`, `chat` and `generate`
with vLLM's signatures and request checks, over a deterministic toy model (see the package
docstring). Nothing here needs a GPU, torch or transformers."""

import itertools
import json
import math
import random
import time
import weakref
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from vllm._fake import RECORD, ChatCall
from vllm.exceptions import VLLMValidationError
from vllm.logprobs import Logprob, LogprobsOnePosition
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import _SAMPLING_EPS, SamplingParams

ALPHABET = " abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;?!'\"()<>|/-_\n{}[]="
PAD, BOS, EOS = 0, 1, 2
SPECIALS = {PAD: "<pad>", BOS: "<s>", EOS: "</s>"}
VOCAB = len(SPECIALS) + len(ALPHABET)
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
ENGINE_ARGS = frozenset(
    {
        "max_model_len",
        "max_logprobs",
        "logprobs_mode",
        "max_num_seqs",
        "max_num_batched_tokens",
        "enable_prefix_caching",
        "disable_log_stats",
        "download_dir",
        "load_format",
        "kv_cache_dtype",
        "generation_config",
        "pipeline_parallel_size",
        "distributed_executor_backend",
    }
)
"""The EngineArgs fields this fake knows; the real EngineArgs refuses unknown names too."""


class FakeTokenizer:
    """Characters are tokens; the chat template comes from tokenizer_config.json."""

    bos_token, eos_token, eos_token_id = "<s>", "</s>", EOS

    def __init__(self, chat_template: str | None) -> None:
        self.chat_template = chat_template

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [len(SPECIALS) + ALPHABET.index(c if c in ALPHABET else "?") for c in text]
        return [BOS, *ids] if add_special_tokens else ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        out = []
        for token in ids:
            if token in SPECIALS:
                out.append("" if skip_special_tokens else SPECIALS[token])
            else:
                out.append(ALPHABET[token - len(SPECIALS)])
        return "".join(out)


class LLM:
    """An LLM for generating texts from given prompts and sampling parameters."""

    def __init__(
        self,
        model: str,
        *,
        runner: str = "auto",
        convert: str = "auto",
        tokenizer: str | None = None,
        tokenizer_mode: str = "auto",
        skip_tokenizer_init: bool = False,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        quantization: str | None = None,
        revision: str | None = None,
        tokenizer_revision: str | None = None,
        seed: int = 0,
        gpu_memory_utilization: float = 0.9,
        swap_space: float = 4,
        cpu_offload_gb: float = 0,
        enforce_eager: bool = False,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - ENGINE_ARGS)
        if unknown:
            raise TypeError(
                f"EngineArgs.__init__() got an unexpected keyword argument '{unknown[0]}'"
            )
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}"
            )
        if dtype not in DTYPES:
            raise ValueError(f"Unknown dtype: {dtype}")
        folder = Path(model)
        config = _read_json(folder / "config.json")
        self.max_model_len = int(
            kwargs.get("max_model_len") or config.get("max_position_embeddings", 2048)
        )
        self.max_logprobs = int(kwargs.get("max_logprobs", 20))
        self.logprobs_mode = kwargs.get("logprobs_mode", "raw_logprobs")
        self._tokenizer = FakeTokenizer(
            _read_json(folder / "tokenizer_config.json").get("chat_template")
        )
        self._weights = zlib.crc32(folder.name.encode())
        self._latency = float(config.get("fake_latency_s", 0.0))
        self._rng = random.Random(seed)
        self.request_counter = itertools.count()
        settings = {
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "seed": seed,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            "tokenizer": tokenizer,
            **kwargs,
        }
        RECORD.events.append(("init", model, settings))
        weakref.finalize(self, RECORD.events.append, ("freed", model, {}))

    def get_tokenizer(self) -> FakeTokenizer:
        return self._tokenizer

    def chat(
        self,
        messages: list[Any] | Sequence[list[Any]],
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool | Callable[..., Any] = True,
        lora_request: Any = None,
        chat_template: str | None = None,
        chat_template_content_format: str = "auto",
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        tokenization_kwargs: dict[str, Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        """Generate responses for a chat conversation (or a sequence of conversations)."""
        conversations = list(messages) if messages and isinstance(messages[0], list) else [messages]
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params]
        kwargs = {"use_tqdm": use_tqdm, "chat_template": chat_template}
        RECORD.calls.append(ChatCall(conversations, list(params), kwargs))
        template = chat_template or self._tokenizer.chat_template
        if template is None:
            raise ValueError(
                "As of transformers v4.44, default chat template is no longer allowed, so you "
                "must provide a chat template if the tokenizer does not define one."
            )
        prompts = [
            {
                "prompt_token_ids": self._tokenizer.encode(
                    _render(template, c, add_generation_prompt), add_special_tokens=False
                )
            }
            for c in conversations
        ]
        return self.generate(prompts, sampling_params=sampling_params, use_tqdm=use_tqdm)

    def generate(
        self,
        prompts: Any,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool | Callable[..., Any] = True,
        lora_request: Any = None,
        priority: list[int] | None = None,
        tokenization_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        """Generates the completions for the input prompts."""
        batch = list(prompts) if isinstance(prompts, list | tuple) else [prompts]
        ids = [
            p["prompt_token_ids"] if isinstance(p, dict) else self._tokenizer.encode(p)
            for p in batch
        ]
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(ids)
        else:
            params = list(sampling_params)
        if len(params) != len(ids):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        for prompt_ids, p in zip(ids, params, strict=True):  # every request is checked first
            self._validate(prompt_ids, p)
        time.sleep(self._latency)
        return [self._run(prompt_ids, p) for prompt_ids, p in zip(ids, params, strict=True)]

    # -- the V1 engine's request checks and the toy model ----------------------------------

    def _validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        if not prompt_ids:
            raise ValueError("The decoder prompt cannot be empty")
        if len(prompt_ids) > self.max_model_len:
            raise ValueError(
                f"The decoder prompt (length {len(prompt_ids)}) is longer than the maximum "
                f"model length of {self.max_model_len}. Make sure that `max_model_len` is no "
                "smaller than the number of text tokens."
            )
        if params.logprobs is not None:
            wanted = VOCAB if params.logprobs == -1 else params.logprobs
            allowed = VOCAB if self.max_logprobs == -1 else self.max_logprobs
            if wanted > allowed:
                raise VLLMValidationError(
                    f"Requested sample logprobs of {wanted}, which is greater than max "
                    f"allowed: {allowed}",
                    parameter="logprobs",
                    value=wanted,
                )

    def _run(self, prompt_ids: list[int], params: SamplingParams) -> RequestOutput:
        rng = random.Random(params.seed) if params.seed is not None else self._rng
        greedy = params.temperature < _SAMPLING_EPS
        budget = params.max_tokens or self.max_model_len - len(prompt_ids)
        tokens: list[int] = []
        positions: list[LogprobsOnePosition] = []
        cumulative, finish = 0.0, "length"
        while len(tokens) < budget and len(prompt_ids) + len(tokens) < self.max_model_len:
            raw = self._logits(prompt_ids + tokens, len(tokens))
            processed = raw if greedy else _filter(raw, params)
            token = max(range(VOCAB), key=lambda t: raw[t]) if greedy else _draw(processed, rng)
            tokens.append(token)
            if params.logprobs is not None:
                source = raw if self.logprobs_mode == "raw_logprobs" else processed
                logprobs = _log_softmax(source)
                positions.append(self._position(logprobs, token, params.logprobs))
                cumulative += logprobs[token]
            if token == EOS and not params.ignore_eos:
                finish = "stop"
                break
        completion = CompletionOutput(
            index=0,
            text=self._tokenizer.decode(tokens, skip_special_tokens=params.skip_special_tokens),
            token_ids=tokens,
            cumulative_logprob=None if params.logprobs is None else cumulative,
            logprobs=None if params.logprobs is None else positions,
            finish_reason=finish,
            stop_reason=None,
        )
        return RequestOutput(
            request_id=str(next(self.request_counter)),
            prompt=None,
            prompt_token_ids=prompt_ids,
            prompt_logprobs=None,
            outputs=[completion],
            finished=True,
        )

    def _logits(self, context: list[int], step: int) -> list[float]:
        key = zlib.crc32(json.dumps([self._weights, context]).encode())
        draw = random.Random(key)
        logits = [draw.gauss(0.0, 2.0) for _ in range(VOCAB)]
        logits[PAD] = logits[BOS] = -30.0
        logits[EOS] += 0.5 * step - 3.0  # the end grows likelier with each token
        return logits

    def _position(self, logprobs: list[float], token: int, k: int) -> LogprobsOnePosition:
        """The sampled token first with its rank, then the top k (vLLM's order and ranks)."""
        count = VOCAB if k == -1 else k
        rank = 1 + sum(1 for value in logprobs if value > logprobs[token])
        decode = self._tokenizer.decode
        position = {token: Logprob(logprobs[token], rank, decode([token]))}
        ordered = sorted(range(VOCAB), key=lambda t: (-logprobs[t], t))
        for place, top in enumerate(ordered[:count], start=1):
            position[top] = Logprob(logprobs[top], place, decode([top]))
        return position


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _render(template: str, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=FakeTokenizer.bos_token,
        eos_token=FakeTokenizer.eos_token,
    )


def _filter(logits: list[float], params: SamplingParams) -> list[float]:
    """Temperature, then top_k, then top_p (the token that crosses p is kept)."""
    scaled = [value / params.temperature for value in logits]
    if 0 < params.top_k < VOCAB:
        kth = sorted(scaled, reverse=True)[params.top_k - 1]
        scaled = [v if v >= kth else -math.inf for v in scaled]
    if params.top_p < 1.0:
        probs = _softmax(scaled)
        kept, total = set(), 0.0
        for token in sorted(range(VOCAB), key=lambda t: -probs[t]):
            kept.add(token)
            total += probs[token]
            if total >= params.top_p:
                break
        scaled = [v if t in kept else -math.inf for t, v in enumerate(scaled)]
    return scaled


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) if v != -math.inf else 0.0 for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _log_softmax(values: list[float]) -> list[float]:
    top = max(values)
    log_total = top + math.log(sum(math.exp(v - top) for v in values if v != -math.inf))
    return [v - log_total for v in values]


def _draw(logits: list[float], rng: random.Random) -> int:
    point, total = rng.random(), 0.0
    probs = _softmax(logits)
    for token, p in enumerate(probs):
        total += p
        if point < total:
            return token
    return max(range(VOCAB), key=lambda t: probs[t])
