"""Keeps API keys out of everything trialrun stores, writes and prints.

Keys come from the environment only (`${env:NAME}` or the SDKs' own variables) and are
never written on purpose; but an error can quote one (a provider's 401 message, an SDK's
exception text). Every key a run resolves is remembered here, and every error text is
passed through `redact` before it reaches the store, a log or the terminal.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

MIN_LENGTH = 8
"""Shorter values (`EMPTY`, `x`) are placeholders, not secrets, and too common to replace."""
MASK = "[redacted]"

_known: set[str] = set()


def remember(value: object) -> None:
    if isinstance(value, str) and len(value) >= MIN_LENGTH:
        _known.add(value)


def remember_env(names: Iterable[str]) -> None:
    for name in names:
        remember(os.environ.get(name))


def redact(text: str) -> str:
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text
