"""One left-padded batch through `model.generate`, with per-row sampling and logprobs.

- **Prompt.** The tokenizer's chat template with the generation prompt; a tokenizer with
  none gets the messages joined as `role: content` lines and a final `assistant:` line.
- **Greedy or sampled.** A row at temperature 0 (or none) takes the argmax of the raw
  logits. A sampled row draws from softmax(logits / temperature) after its own top_k and
  top_p filters, with its own `torch.Generator` seeded from the trial's seed, on the CPU.
  So a row's draws never depend on its batchmates' seeds or count.
- **Reproducibility.** The same rows in the same batch give bit-identical tokens on the
  same machine, greedy or sampled. Across batch compositions a row sees different padding
  and batched kernels; on CPU in float32 that gave identical tokens in our tests, but on a
  GPU (other kernels per shape, bf16) the logits may differ in the last bits and a near
  tie may flip a token, greedy or sampled. Nothing is promised across machines or dtypes.
- **Logprobs.** Per generated token: the chosen token's logprob and the top-k, all from
  log_softmax of the raw, unprocessed logits (before temperature or filters), in the shape
  of the API providers' records: `{token, logprob, top: [{token, logprob}, ...]}`.
- **Ends.** A row stops at the model's end token (`finish_reason: stop`; the end token is
  counted in usage.output but not in the text or logprobs) or at its `max_tokens`
  (`length`). The model's generation_config gives only its end and pad ids: sampling
  settings come from the trial's params, never from the model's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trialrun.local.models import LoadedModel


@dataclass(frozen=True)
class Row:
    """One request of a batch, in tokens and sampling settings."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    top_logprobs: int = 0
    """0: no logprobs; n ≥ 1: the chosen token and the n most likely at each step."""


@dataclass
class RowResult:
    token_ids: list[int]
    text: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    logprobs: list[dict[str, Any]] | None


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt's token ids (chat template, or the plain `role: content` join)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    plain: list[int] = tokenizer("\n".join([*lines, "assistant:"]))["input_ids"]
    return plain


def pad_left(rows: list[list[int]], pad_id: int, device: str) -> tuple[Any, Any]:
    """(input_ids, attention_mask) of the prompts, padded on the left."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def generate_batch(loaded: LoadedModel, rows: list[Row]) -> list[RowResult]:
    """Generate every row in one `model.generate` call."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    ids, mask = pad_left([r.prompt_ids for r in rows], loaded.pad_id, loaded.device)
    config = GenerationConfig(
        max_new_tokens=max(r.max_tokens for r in rows),
        do_sample=False,  # the RowSampler below makes every choice; generate takes argmax
        pad_token_id=loaded.pad_id,
        eos_token_id=list(loaded.eos_ids) or None,
        output_logits=True,
        return_dict_in_generate=True,
    )
    sampler = RowSampler(rows)
    with torch.inference_mode():
        out = loaded.model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([sampler]),
        )
    generated = out.sequences[:, ids.shape[1] :].tolist()
    logits = torch.stack(out.logits, dim=1) if out.logits else None  # (batch, steps, vocab)
    return [
        _result(loaded, row, generated[i], None if logits is None else logits[i])
        for i, row in enumerate(rows)
    ]


def _result(loaded: LoadedModel, row: Row, tokens: list[int], logits: Any) -> RowResult:
    end = next((k for k, t in enumerate(tokens) if t in loaded.eos_ids), None)
    if end is not None and end < row.max_tokens:
        kept, finish, output = tokens[:end], "stop", end + 1
    else:
        kept, finish = tokens[: row.max_tokens], "length"
        output = len(kept)
    text = loaded.tokenizer.decode(kept, skip_special_tokens=True)
    logprobs = (
        _logprobs(loaded.tokenizer, kept, logits, row.top_logprobs) if row.top_logprobs else None
    )
    return RowResult(kept, text, finish, len(row.prompt_ids), output, logprobs)


def _logprobs(tokenizer: Any, tokens: list[int], logits: Any, k: int) -> list[dict[str, Any]]:
    import torch

    if not tokens:
        return []
    raw = torch.log_softmax(logits[: len(tokens)].float(), dim=-1)
    chosen = raw[torch.arange(len(tokens)), torch.tensor(tokens, device=raw.device)].tolist()
    top_values, top_ids = raw.topk(min(k, raw.shape[-1]), dim=-1)
    pieces = _pieces(tokenizer, {*tokens, *top_ids.flatten().tolist()})
    out = []
    for step, token in enumerate(tokens):
        top = [
            {"token": pieces[t], "logprob": v}
            for t, v in zip(top_ids[step].tolist(), top_values[step].tolist(), strict=True)
        ]
        out.append({"token": pieces[token], "logprob": chosen[step], "top": top})
    return out


def _pieces(tokenizer: Any, ids: set[int]) -> dict[int, str]:
    ordered = sorted(ids)
    texts = tokenizer.batch_decode([[i] for i in ordered])
    return dict(zip(ordered, texts, strict=True))


class RowSampler:
    """A logits processor that makes each row's choice: the argmax of the raw logits for a
    greedy row, a draw from its own seeded generator for a sampled one. It returns scores
    that are -inf but at the chosen token, so generate's argmax takes exactly that token."""

    def __init__(self, rows: list[Row]) -> None:
        import torch

        self.rows = rows
        self.generators = [
            torch.Generator().manual_seed(int(r.seed if r.seed is not None else 0) % (1 << 63))
            if r.temperature > 0
            else None
            for r in rows
        ]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        chosen = scores.argmax(dim=-1)
        for i, (row, generator) in enumerate(zip(self.rows, self.generators, strict=True)):
            if generator is not None:
                chosen[i] = _draw(scores[i].float(), row, generator)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen.unsqueeze(1), 0.0)
        return out


def _draw(logits: Any, row: Row, generator: Any) -> int:
    import torch

    scaled = (logits / row.temperature).cpu()
    if row.top_k is not None and 0 < row.top_k < scaled.shape[-1]:
        kth = scaled.topk(row.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if row.top_p is not None and row.top_p < 1.0:
        ordered, order = scaled.sort(descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative - ordered.softmax(-1) >= row.top_p  # keep the token that crosses p
        scaled[order[drop]] = float("-inf")
    probs = scaled.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())
