"""The introspection sweep's trial (seed 001): inject a concept into the residual stream
and ask the model whether it notices an injected thought.

Each trial builds the concept's vector at the grid's layer from contrastive prompts (the
item's `positive` minus `negative` prompts, last-token activations; cached per model,
concept and layer in this process), then generates its answer to the config's messages
with the vector added at `strength` (injected trials) or with nothing added (control
trials, strength 0: the same code path). The output holds the answer, whether it was
injected, and what was injected (vector hash, layer, strength, norm ratio); the judge
reads `output.response`.
"""

from __future__ import annotations

from typing import Any

_vectors: dict[tuple[str, str, float], Any] = {}


async def trial(ctx: Any) -> dict[str, Any]:
    layer, concept = float(ctx.grid["layer"]), ctx.item["concept"]
    key = (ctx.model, concept, layer)
    if key not in _vectors:
        _vectors[key] = await ctx.concept_vector(ctx.item["positive"], ctx.item["negative"], layer)
    injected = bool(ctx.grid["injected"])
    strength = float(ctx.grid["strength"]) if injected else 0.0
    out = await ctx.generate_steered(ctx.messages, _vectors[key], layer=layer, strength=strength)
    return {
        "response": out["text"],
        "concept": concept,
        "injected": injected,
        "finish_reason": out["finish_reason"],
        "injection": out["injection"],
    }
