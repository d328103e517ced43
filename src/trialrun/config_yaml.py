"""Reading a config file: PyYAML's safe loader made strict, and checks on what YAML can build.

A config is small and shallow; this module refuses, with the line where it can, what would
otherwise pass silently (a key given twice) or crash a recursive walker (deep nesting, an
alias bomb, an integer longer than Python reads). The dataset reader shares its depth cap.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from trialrun.errors import ConfigError

MAX_DEPTH = 100
"""Deepest nesting of a config or a dataset row (the top mapping is level 1). Configs and
items are shallow; the cap keeps every recursive walker (PyYAML, json, deepcopy, pydantic)
far from Python's recursion limit."""


class RefusedYAML(yaml.MarkedYAMLError):
    """YAML that parses but that trialrun refuses: a key given twice in one mapping (PyYAML
    would keep the last silently), nesting deeper than MAX_DEPTH (PyYAML's composer recurses
    and would crash), an integer longer than Python reads from text."""


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no object tags), reading `1e-5` as a float as YAML 1.2 does,
    and raising RefusedYAML, with the line, on what would pass silently or crash."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise RefusedYAML(
                    problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self._refuse_duplicate_keys(node)
        return super().construct_mapping(node, deep)

    def _refuse_duplicate_keys(self, node: yaml.MappingNode) -> None:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys merged in by `<<: *base` may be overridden: that is merging
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first_line.get(key)
            except TypeError:
                continue  # an unhashable key: PyYAML's own error follows
            if seen is not None:
                raise RefusedYAML(
                    problem=f"key '{key}' given twice in one mapping (first at line {seen}); "
                    "keep one",
                    problem_mark=key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # sys.int_info's limit on decimal digits (CVE-2020-10735)
            digits = sum(ch.isdigit() for ch in str(node.value))
            limit = sys.get_int_max_str_digits()
            raise RefusedYAML(
                problem=f"an integer of {digits:,} digits is longer than the {limit:,} Python "
                "reads; quote it to keep it as text",
                problem_mark=node.start_mark,
            ) from None


ConfigLoader.add_constructor("tag:yaml.org,2002:int", ConfigLoader.construct_yaml_int)

ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a config file safely (no Python object tags) into a dict."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        data = yaml.load(text, Loader=ConfigLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}:{_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    check_shape(data, f"{path}: the config")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """` line 3, column 5: YAML syntax error: ...` (refused YAML is not a syntax error)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    label = "" if isinstance(exc, RefusedYAML) else "YAML syntax error: "
    return f"{where}: {label}{problem}"


MAX_CONFIG_VALUES = 200_000
"""A config is small; YAML aliases can make a tiny file expand exponentially (the
"billion laughs"), which would exhaust memory when it is validated and copied."""


def check_shape(data: Any, what: str) -> None:
    """Refuse what YAML aliases (*name) make huge or deep: a tiny file can expand
    exponentially (the "billion laughs"), or nest an anchor in an alias past MAX_DEPTH."""
    aliases = "once its YAML aliases (*name) are followed"
    count, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{what} expands to more than {MAX_CONFIG_VALUES:,} values {aliases}; "
                "use fewer aliases or a dataset file"
            )
        if depth > MAX_DEPTH:
            raise ConfigError(f"{what} nests more than {MAX_DEPTH} levels deep {aliases}")
        if isinstance(value, dict):
            stack.extend((part, depth + 1) for pair in value.items() for part in pair)
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a parsed JSON or YAML value nests more than `limit` levels (scalars count)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False
