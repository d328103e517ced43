"""Prices per million tokens, shipped as data (`data/prices.json`) and overridable in the config.

A model with no known price gets `cost_usd: null` and one warning; a cost is never guessed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from trialrun.types import Usage

_SNAPSHOT = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2}|latest)$")


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    """USD per million input tokens."""
    output: float
    """USD per million output tokens."""
    batch_discount: float = 0.5

    def cost(self, usage: Usage, *, batch: bool = False) -> float:
        factor = 1.0 - self.batch_discount if batch else 1.0
        return (usage.input * self.input + usage.output * self.output) * factor / 1e6


@cache
def shipped() -> dict[str, Price]:
    text = resources.files("trialrun").joinpath("data/prices.json").read_text(encoding="utf-8")
    return {key: _price(value) for key, value in json.loads(text).items() if "/" in key}


def _price(value: dict[str, Any]) -> Price:
    return Price(
        float(value["input"]), float(value["output"]), float(value.get("batch_discount", 0.5))
    )


def lookup(model: str, overrides: dict[str, Price] | None = None) -> Price | None:
    """The price of `provider/model`, or of the base model of a dated snapshot; None if unknown."""
    table = {**shipped(), **(overrides or {})}
    if model in table:
        return table[model]
    base = _SNAPSHOT.sub("", model)
    return table.get(base)
