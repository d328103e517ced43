"""Canonical JSON and content hashes: the bottom layer every id and cache key stands on.

It imports nothing from trialrun, so the store, the providers and the dataset can hash
without depending on the config or the plan (STYLE.md 19).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import orjson


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 kept; the input of every content hash."""
    return canonical_bytes(value).decode()


def canonical_bytes(value: Any) -> bytes:
    if _same_in_orjson(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # integers beyond 64 bits, or types orjson does not know
            pass
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode()


def _same_in_orjson(value: Any) -> bool:
    """False where orjson's text differs from json.dumps: floats below 1e-4 (0.00001 vs 1e-05), NaN.

    On the hot path (every cache key, request and record): a loop over a stack, exact type
    checks first, since the values are nearly all strings in dicts and lists."""
    stack = [value]
    pop, push_all = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is dict:
            push_all(item.values())
        elif kind is list or kind is tuple:
            push_all(item)
        elif isinstance(item, float):
            if not (math.isfinite(item) and (item == 0.0 or abs(item) >= 1e-4)):
                return False
        elif isinstance(item, dict):
            push_all(item.values())
        elif isinstance(item, list | tuple):
            push_all(item)
    return True


def content_hash(value: Any) -> str:
    return hashlib.sha256(canonical_bytes(value)).hexdigest()
