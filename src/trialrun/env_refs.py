"""`${env:NAME}` references in a config: found at load, resolved only at run time.

A resolved value is a secret (a key, a URL with a password): it is never written
anywhere, and `routing` hands every one to `trialrun.secrets` for redaction.
"""

from __future__ import annotations

import os
import re
from typing import Any

from trialrun.config import ENV_REF
from trialrun.errors import ConfigError


def resolve_env(value: Any, where: str) -> Any:
    """Replace `${env:NAME}` references at run time; the result is never written anywhere."""
    if isinstance(value, dict):
        return {k: resolve_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, f"{where}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set; export it first")
        return os.environ[name]

    return ENV_REF.sub(lookup, value)


def env_references(value: Any) -> set[str]:
    """Names of every `${env:NAME}` inside a raw config value."""
    if isinstance(value, dict):
        return set().union(*(env_references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(env_references(v) for v in value)) if value else set()
    return set(ENV_REF.findall(value)) if isinstance(value, str) else set()
