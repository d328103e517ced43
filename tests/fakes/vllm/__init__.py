"""A fake of vLLM's offline API, for tests on machines without a GPU (nothing here is vLLM).

Put `tests/fakes` on sys.path (tests/test_vllm.py does, per test) and `import vllm` finds
this package instead of the real one. It mimics exactly the public parts trialrun's
`vllm/` provider calls, with the real names, signatures, defaults and checks, read from
vLLM's own source (stored copies of vllm-project/vllm, read 2026-12; vLLM itself was not
installed or run here):

- `vllm.LLM` (vllm/entrypoints/llm.py @ 10fdb8f, the v0.14-0.15 line: `LLM(model, *,
  tensor_parallel_size, dtype, seed, gpu_memory_utilization, **EngineArgs)`, `get_tokenizer`,
  `chat(messages, sampling_params, use_tqdm, ..., chat_template, ...)`, `generate`). A batch
  whose requests fail validation raises before anything runs (vLLM validates each request as
  it adds it, and aborts the added ones when one fails): the whole call fails.
- `vllm.SamplingParams` (vllm/sampling_params.py @ 00388f6): the fields, their defaults
  (temperature 1.0, top_p 1.0, top_k 0, max_tokens 16, logprobs None, seed None) and the
  checks of `_verify_args`; temperature below 1e-5 is greedy and resets top_p / top_k.
- `vllm.outputs.RequestOutput` / `CompletionOutput` (vllm/outputs.py @ 003d3ee) and
  `vllm.logprobs.Logprob` (vllm/logprobs.py @ 578b601): `logprobs` is one dict per generated
  token, `{token_id: Logprob(logprob, rank, decoded_token)}`, holding the top `logprobs`
  tokens (ranks 1..k) and the sampled token with its own rank (k + 1 entries when it is not
  among them). The end token is in `token_ids` and `logprobs` (not in `text`), with
  `finish_reason` "stop" and `stop_reason` None; `max_tokens` reached is "length".
- The V1 engine's request checks (vllm/v1/engine/processor.py): `logprobs` above the
  engine's `max_logprobs` (20 by default) and a prompt longer than `max_model_len` raise
  ValueError; logprobs are of the raw logits unless `logprobs_mode="processed_logprobs"`.

The "model" is a deterministic toy: characters are tokens, and each step's logits are a
seeded function of the model folder and the tokens so far, the end token growing likelier
with each step. A folder's `config.json` may hold `fake_latency_s` (seconds each `chat`
call takes). What the fake saw is kept in `vllm._fake.RECORD` for the tests to read.
"""

from vllm.entrypoints.llm import LLM
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import SamplingParams

__version__ = "0.15.0+fake"
__all__ = ["LLM", "CompletionOutput", "RequestOutput", "SamplingParams"]
