"""Keeps API keys out of everything trialrun stores, writes and prints.

Keys come from the environment only (`${env:NAME}` or the SDKs' own variables) and are
never written on purpose; but an error can quote one (a provider's 401 message, an SDK's
exception text). Every key a run resolves is remembered here, and every error text is
passed through `redact` before it reaches the store, a log or the terminal.

A config must not hold a secret in clear anywhere it is written (config.yaml, the run's
database, manifest.json): `looks_secret` tells the config checks which values to refuse.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable
from urllib.parse import quote, urlsplit

SHORT = 8
"""Keys shorter than this are masked only where they stand as a whole token, so a short
key (`x1`, `EMPTY`) does not blank out every word it happens to be part of."""
MASK = "[redacted]"

_long: set[str] = set()
_short: set[str] = set()
_short_pattern: re.Pattern[str] | None = None

SECRET_NAME = re.compile(
    r"(api[_-]?key|apikey|secret|password|passwd|authorization|credential|private[_-]?key|"
    r"access[_-]?key|^key$|^token$|(auth|access|bearer|session|refresh|api)[_-]?token)",
    re.IGNORECASE,
)
"""Option or param names whose literal value would be a credential."""
SECRET_VALUE = re.compile(
    r"(sk-[A-Za-z0-9_\-]{16,}|sk-ant-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{30,}|"
    r"hf_[A-Za-z0-9]{20,}|xox[abpr]-[A-Za-z0-9-]{10,}|gh[pousr]_[A-Za-z0-9]{30,}|"
    r"(?i:bearer)\s+[A-Za-z0-9._\-]{12,})"
)
"""Shapes of well-known API keys and bearer tokens, wherever they appear."""
ENV_REFERENCE = re.compile(r"^\$\{env:[A-Za-z_][A-Za-z0-9_]*\}$")


def remember(value: object) -> None:
    """Mask `value` (and the ways an error text may quote it) from now on."""
    global _short_pattern
    if not isinstance(value, str) or not value.strip():
        return
    for form in _quoted_forms(value):
        if len(form) >= SHORT:
            _long.add(form)
        elif form not in _short:
            _short.add(form)
            alternatives = "|".join(re.escape(s) for s in sorted(_short, key=len, reverse=True))
            _short_pattern = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")


def _quoted_forms(value: str) -> set[str]:
    """The key as written, as `repr` and JSON escape it (a backslash doubles), and URL-quoted."""
    return {value, repr(value)[1:-1], json.dumps(value)[1:-1], quote(value, safe="")}


def remember_env(names: Iterable[str]) -> None:
    for name in names:
        remember(os.environ.get(name))


def remember_url_password(url: object) -> None:
    """Mask the password of a URL that carries one (resolved from `${env:...}`)."""
    if isinstance(url, str):
        with contextlib.suppress(ValueError):  # not a URL: nothing to mask
            remember(urlsplit(url).password)


def redact(text: str) -> str:
    for secret in sorted(_long, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    if _short_pattern is not None:
        text = _short_pattern.sub(MASK, text)
    return text


def find_secret(value: object, where: str) -> str | None:
    """The dotted key of the first value inside `value` that `looks_secret`, or None."""
    stack: list[tuple[str, object]] = [(where, value)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((f"{key}.{k}", v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{key}.{i}", v) for i, v in enumerate(item))
        elif looks_secret(key.rsplit(".", 1)[-1], item):
            return key
    return None


def looks_secret(name: str, value: object) -> bool:
    """Whether a config value under `name` would be a credential written in clear: a
    secret-named option with a literal (not `${env:NAME}`) text, or text shaped like a
    well-known API key anywhere."""
    if not isinstance(value, str) or not value or ENV_REFERENCE.fullmatch(value):
        return False
    return bool(SECRET_NAME.search(name)) or bool(SECRET_VALUE.search(value))


def url_credentials(url: str) -> bool:
    """Whether a URL carries a user or password (`https://user:sk-...@host`) in clear text;
    `${env:...}` references inside it are resolved later and are fine."""
    if "${env:" in url:
        url = re.sub(r"\$\{env:[A-Za-z_][A-Za-z0-9_]*\}", "", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return bool(parts.password) or bool(parts.username and SECRET_VALUE.search(parts.username))
