"""Sandboxed Jinja templates for messages and follow-ups, checked before anything runs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from trialrun.config import RESERVED_TEMPLATE_NAMES, Experiment
from trialrun.errors import ConfigError, TrialrunError

_PLAIN_FIELD = re.compile(r"\{\{\s*item\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)


class Template:
    """One compiled message template that knows which item fields it reads."""

    def __init__(self, source: str, where: str) -> None:
        self.source = source
        self.where = where
        try:
            ast = _ENV.parse(source)
            self._compiled = _ENV.from_string(source)
        except TemplateSyntaxError as exc:
            raise ConfigError(
                f"{where}: template syntax error, line {exc.lineno}: {exc.message}"
            ) from None
        self.names = _top_level_names(ast)
        self.item_fields = _item_fields(ast)
        self.static = not any(mark in source for mark in ("{{", "{%", "{#"))
        plain = _PLAIN_FIELD.fullmatch(source)
        self._plain_field = plain.group(1) if plain else None

    def render(self, context: dict[str, Any]) -> str:
        if self.static:
            return self.source
        if self._plain_field is not None:  # `{{ item.prompt }}`: skip Jinja's machinery
            value = context["item"].get(self._plain_field)
            if isinstance(value, str):
                return value
        try:
            return self._compiled.render(context)
        except Exception as exc:  # any failure of a user's template fails the trial, not the run
            raise TrialrunError(f"{self.where}: cannot render template: {exc}") from None


def _top_level_names(ast: nodes.Template) -> set[str]:
    from jinja2 import meta

    return set(meta.find_undeclared_variables(ast))


def _item_fields(ast: nodes.Template) -> set[str]:
    """Item fields a template needs on every item; `item.x is defined` and `item.get(...)`
    mark fields as optional, and method calls (`item.items()`) are not fields."""
    optional = {
        _field_of(test.node)
        for test in ast.find_all(nodes.Test)
        if test.name in {"defined", "undefined"}
    }
    methods = {id(call.node) for call in ast.find_all(nodes.Call)}
    fields = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if id(node) not in methods:
            fields.add(_field_of(node))
    return fields - optional - {None}  # type: ignore[return-value]


def _field_of(node: nodes.Node) -> str | None:
    """`x` for `item.x` or `item['x']`, else None."""
    target = getattr(node, "node", None)
    if not (isinstance(target, nodes.Name) and target.name == "item"):
        return None
    if isinstance(node, nodes.Getattr):
        return node.attr
    arg = getattr(node, "arg", None)
    return arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None


class Conversation:
    """All templates of an experiment: the first turn's messages, then one per follow-up."""

    def __init__(self, experiment: Experiment, source: str) -> None:
        self.first = [
            (m.role, Template(m.content, f"{source}: messages[{i}].content"))
            for i, m in enumerate(experiment.messages)
        ]
        self.followups = [
            Template(text, f"{source}: followups[{i}]")
            for i, text in enumerate(experiment.followups)
        ]
        self._allowed = RESERVED_TEMPLATE_NAMES | set(experiment.grid)
        self._reads_fields = [t for t in self.templates() if t.item_fields]

    def templates(self) -> list[Template]:
        return [t for _, t in self.first] + self.followups

    def check(self, items: Iterable[dict[str, Any]]) -> None:
        """Fail now, with the template named, if any template reads a name or field that is not there."""
        self.check_names()
        for index, item in enumerate(items):
            self.check_item(item, f"item {index}")

    def check_names(self) -> None:
        """Every name a template reads is an item field, a grid name or a reserved name."""
        for template in self.templates():
            unknown = template.names - self._allowed
            if unknown:
                name = sorted(unknown)[0]
                raise ConfigError(
                    f"{template.where}: unknown name '{name}' (use item.<field>, grid values by "
                    f"name, turns, turn, model, repeat, seed)"
                )

    def check_item(self, item: dict[str, Any], where: str) -> None:
        """The item has every field the templates read without a default (`where` names it)."""
        for template in self._reads_fields:
            missing = template.item_fields - item.keys()
            if missing:
                fields = ", ".join(sorted(item))
                raise ConfigError(
                    f"{template.where}: uses item.{sorted(missing)[0]} but the item at {where} "
                    f"has no such field (fields: {fields})"
                )

    def first_messages(self, context: dict[str, Any]) -> list[dict[str, str]]:
        return [{"role": role, "content": t.render(context)} for role, t in self.first]

    def followup(self, index: int, context: dict[str, Any]) -> dict[str, str]:
        return {"role": "user", "content": self.followups[index].render(context)}
