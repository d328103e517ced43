"""KEY=VALUE overrides of a raw config, and `--multirun` sweeps over their values.

An override names a key by its dotted path (`models.0.params.max_tokens=64`); its value is
YAML. The result remembers which override set which key, so that `loading.validate` can
blame the override rather than the file for a bad value.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import yaml

from trialrun.config import PLANNED_KEYS
from trialrun.config_keys import clip, first_unknown_key, unknown_key_hint
from trialrun.config_yaml import ConfigLoader, RefusedYAML, check_shape
from trialrun.errors import ConfigError


class Setter(NamedTuple):
    """Which override set which key, in the form pydantic's error locations take."""

    path: tuple[str, ...]
    """Dotted key with list indices resolved (`models.-1` → `models.1`)."""
    text: str
    as_text: bool
    """The value was not valid YAML, so it was kept as a string."""


class Overridden(dict[str, Any]):
    """A raw config with KEY=VALUE overrides applied that remembers its setters and the
    config before them, so `validate` names the override, not the file, for a bad value."""

    def __init__(self, base: dict[str, Any]) -> None:
        super().__init__(copy.deepcopy(base))
        self.base = base
        self.setters: list[Setter] = []


def parse_override(text: str) -> tuple[list[str], Any]:
    """`grid.temperature=[0,0.5]` → (['grid', 'temperature'], [0, 0.5]); values are YAML."""
    path, value, _ = _parse_override(text)
    return path, value


def _parse_override(text: str) -> tuple[list[str], Any, bool]:
    """(path, value, whether the value was kept as text since it is not valid YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{override_label(text)}: expected KEY=VALUE, e.g. repeats=3")
    try:
        parsed, as_text = (yaml.load(value, Loader=ConfigLoader) if value.strip() else None), False
    except RefusedYAML as exc:
        raise ConfigError(f"{override_label(text)}: {exc.problem}") from None
    except yaml.YAMLError:
        parsed, as_text = value, True
    check_shape(parsed, f"override '{clip(key)}': the value")
    return key.strip().split("."), parsed, as_text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> Overridden:
    """Apply dotted KEY=VALUE overrides to a copy of a raw config; unknown keys are an error."""
    result = Overridden(raw)
    for text in overrides:
        path, value, as_text = _parse_override(text)
        _check_path(path, text)
        resolved = _set_path(result, path, value, text)
        result.setters.append(Setter(tuple(resolved), text, as_text))
    return result


def override_label(text: str) -> str:
    """How an error line names an override: `override 'repeats=3'` (clipped if long)."""
    return f"override '{clip(text)}'"


def _check_path(path: list[str], text: str) -> None:
    if path[0] in PLANNED_KEYS:
        raise ConfigError(
            f"{override_label(text)}: key '{path[0]}' ({PLANNED_KEYS[path[0]]}) is planned "
            "but not in this version of trialrun yet"
        )
    depth = first_unknown_key(path)
    if depth is not None:
        key = clip(".".join(path[: depth + 1]))
        hint = unknown_key_hint(path[:depth], path[depth])
        raise ConfigError(f"{override_label(text)}: unknown key '{key}'{hint}")


def _set_path(data: dict[str, Any], path: list[str], value: Any, text: str) -> list[str]:
    """Set the value; return the path with list indices resolved (`-1` → the last index)."""
    node: Any = data
    resolved: list[str] = []
    for depth, part in enumerate(path[:-1]):
        nxt = path[depth + 1]
        if isinstance(node, list):
            index = _list_index(node, part, text)
            node = node[index]
            resolved.append(str(index))
            continue
        if not isinstance(node.get(part), dict | list):
            node[part] = [] if nxt.lstrip("-").isdigit() else {}
        node = node[part]
        resolved.append(part)
    last = path[-1]
    if isinstance(node, list):
        index = _list_index(node, last, text)
        node[index] = value
        last = str(index)
    else:
        node[last] = value
    return [*resolved, last]


def _list_index(node: list[Any], part: str, text: str) -> int:
    index = int(part)
    if not -len(node) <= index < len(node):
        raise ConfigError(f"{override_label(text)}: index {index} is out of range")
    return index % len(node)


def expand_multirun(overrides: list[str]) -> list[list[str]]:
    """Hydra-style sweep: each comma-separated override value gives one experiment."""
    choices: list[list[str]] = []
    for text in overrides:
        key, _, value = text.partition("=")
        parts = _split_top_level(value)
        choices.append([f"{key}={part}" for part in parts])
    combos: list[list[str]] = [[]]
    for options in choices:
        combos = [[*combo, option] for combo in combos for option in options]
    return combos


def _split_top_level(value: str) -> list[str]:
    parts, depth, current, quote = [], 0, "", ""
    for char in value:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"" and not current.strip():
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return parts
