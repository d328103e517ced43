"""Activation steering: add `strength × vector` to a decoder layer's residual stream.

The helper for trial functions (issue 15, part 3) and notebooks, over plain PyTorch
forward hooks (docs/design/notes.md says why not nnsight):

    from trialrun.local import steering

    vector = steering.concept_vector(model, tokenizer, ["Talk about the ocean."],
                                     ["Talk about anything."], layer=0.5)
    with steering.steer(model, vector, layer=0.5, strength=4.0) as injection:
        out = model.generate(**batch, max_new_tokens=20)
    record["injection"] = injection.to_json()

- **Layer.** An int is a decoder layer's index (negative counts from the end); a float
  in (0, 1] is a fraction of depth: layer `round(f × n) - 1`, clamped to [0, n-1], so 0.5
  of 24 layers is layer 11 and 1.0 is the last. The vector is added to that layer's output
  (the residual stream after the layer).
- **Positions.** `"prompt"`, `"generated"` or `"all"` (the default). The prompt pass is
  the first forward in the context, or any forward of more than one position; each later
  one-position forward is a generated step (generation with a KV cache). Positions the
  attention mask marks as padding (left padding) are never touched: the mask is read from
  each forward of the model itself, so nothing needs passing.
- **Vector.** `concept_vector` is the mean over `positive` prompts minus the mean over
  `negative` prompts of the layer's output, each prompt reduced to its last token
  (`reduce="last"`, the default) or to the mean over its tokens (`reduce="mean"`); prompts
  go in as plain text (apply a chat template yourself if you want one) and run one by
  one, so padding cannot enter the means. The steering vector is used as given (normalise
  it yourself if you want a unit vector).
- **Record.** `steer` yields an `Injection`: the vector's sha256 (of its float32 bytes),
  the layer, the strength, the positions, the injected norm (`strength × ‖vector‖`) and
  the layer's mean activation norm over the real (unpadded) prompt positions of the first
  prompt pass, measured before the injection, and their ratio.
- **Hooks** are removed when the context ends, normally or by an exception;
  `active_hooks(model)` counts what is left (0 after any `steer`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from trialrun.errors import ConfigError

Positions = Literal["prompt", "generated", "all"]
POSITIONS = ("prompt", "generated", "all")


def decoder_layers(model: Any) -> Any:
    """The model's list of decoder layers (Llama, Qwen, Mistral, Phi, Gemma, GPT-2 shapes)."""
    for path in ("model.layers", "model.model.layers", "transformer.h", "gpt_neox.layers"):
        found = model
        for name in path.split("."):
            found = getattr(found, name, None)
            if found is None:
                break
        if found is not None:
            return found
    raise ConfigError(f"steering: no decoder layers found in {type(model).__name__}")


def resolve_layer(model: Any, layer: int | float) -> int:
    """The index of `layer` (an index, or a fraction of depth in (0, 1]); one line if bad."""
    count = len(decoder_layers(model))
    if isinstance(layer, bool) or not isinstance(layer, int | float):
        raise ConfigError(f"steering: layer must be an index or a fraction, not {layer!r}")
    if isinstance(layer, float):
        if not 0 < layer <= 1:
            raise ConfigError(
                f"steering: layer fraction {layer} is outside (0, 1] (an int is an index)"
            )
        return min(max(round(layer * count) - 1, 0), count - 1)
    if not -count <= layer < count:
        raise ConfigError(
            f"steering: layer {layer} is beyond the model's {count} layers "
            f"(indices {-count}..{count - 1}, or a fraction of depth in (0, 1])"
        )
    return layer % count


def vector_hash(vector: Any) -> str:
    import torch

    data = vector.detach().to(torch.float32).cpu().contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


@dataclass
class Injection:
    """What a `steer` context injected (filled as the model runs)."""

    vector_sha256: str
    layer: int
    strength: float
    positions: str
    injected_norm: float
    mean_activation_norm: float | None = None
    """The layer's mean output norm over the first prompt pass's real positions."""
    calls: int = 0
    """Forwards of the layer seen in the context."""

    @property
    def relative_norm(self) -> float | None:
        if not self.mean_activation_norm:
            return None
        return self.injected_norm / self.mean_activation_norm

    def to_json(self) -> dict[str, Any]:
        return {
            "vector_sha256": self.vector_sha256,
            "layer": self.layer,
            "strength": self.strength,
            "positions": self.positions,
            "injected_norm": self.injected_norm,
            "mean_activation_norm": self.mean_activation_norm,
            "relative_norm": self.relative_norm,
        }


@contextmanager
def steer(
    model: Any,
    vector: Any,
    layer: int | float,
    strength: float,
    positions: Positions = "all",
) -> Iterator[Injection]:
    """Add `strength × vector` to `layer`'s output for the context's forwards."""
    if positions not in POSITIONS:
        raise ConfigError(f"steering: positions must be one of {', '.join(POSITIONS)}")
    index = resolve_layer(model, layer)
    target = decoder_layers(model)[index]
    injection = Injection(
        vector_hash(vector), index, float(strength), positions, float(strength * vector.norm())
    )
    state: dict[str, Any] = {"mask": None}

    def capture(_module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        state["mask"] = kwargs.get("attention_mask")

    def add(_module: Any, _args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        changed = _inject(hidden, vector, strength, positions, injection, state["mask"])
        return (changed, *output[1:]) if isinstance(output, tuple) else changed

    handles = [
        model.register_forward_pre_hook(capture, with_kwargs=True),
        target.register_forward_hook(add),
    ]
    try:
        yield injection
    finally:
        for handle in handles:
            handle.remove()


def _inject(
    hidden: Any, vector: Any, strength: float, positions: str, injection: Injection, mask: Any
) -> Any:
    """`hidden` (batch, seq, dim) with the vector added where asked, never on padding."""
    import torch

    seq = hidden.shape[1]
    prompt = injection.calls == 0 or seq > 1
    injection.calls += 1
    real = _real_positions(mask, hidden, seq)
    if prompt and injection.mean_activation_norm is None:
        norms = hidden.float().norm(dim=-1)
        injection.mean_activation_norm = float(norms[real].mean())
    if positions == ("generated" if prompt else "prompt"):
        return hidden
    delta = (strength * vector).to(hidden.dtype).to(hidden.device)
    return torch.where(real.unsqueeze(-1), hidden + delta, hidden)


def _real_positions(mask: Any, hidden: Any, seq: int) -> Any:
    """(batch, seq) booleans: True where a real token is (the mask's last `seq` columns)."""
    import torch

    if mask is None or mask.dim() != 2:
        return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    return mask[:, -seq:].to(hidden.device).bool()


def layer_activations(
    model: Any, tokenizer: Any, prompts: Sequence[str], layer: int | float, reduce: str = "last"
) -> Any:
    """(len(prompts), dim): each prompt's `layer` output, its last token or its mean."""
    import torch

    if reduce not in ("last", "mean"):
        raise ConfigError("steering: reduce must be 'last' or 'mean'")
    target = decoder_layers(model)[resolve_layer(model, layer)]
    seen: list[Any] = []

    def keep(_module: Any, _args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        seen.append(hidden[0, -1] if reduce == "last" else hidden[0].mean(dim=0))

    device = next(model.parameters()).device
    handle = target.register_forward_hook(keep)
    try:
        with torch.inference_mode():
            for prompt in prompts:
                ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
                model(input_ids=ids)
    finally:
        handle.remove()
    return torch.stack([s.float() for s in seen])


def concept_vector(
    model: Any,
    tokenizer: Any,
    positive: Sequence[str],
    negative: Sequence[str],
    layer: int | float,
    reduce: str = "last",
) -> Any:
    """Mean activation over `positive` minus mean over `negative` at `layer` (float32)."""
    if not positive or not negative:
        raise ConfigError("steering: concept_vector needs positive and negative prompts")
    plus = layer_activations(model, tokenizer, positive, layer, reduce).mean(dim=0)
    minus = layer_activations(model, tokenizer, negative, layer, reduce).mean(dim=0)
    return plus - minus


def active_hooks(model: Any) -> int:
    """Forward hooks left on the model and its modules (0 after every `steer` context)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
