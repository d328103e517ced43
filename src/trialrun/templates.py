"""Sandboxed Jinja templates for messages and follow-ups, checked before anything runs.

What a template sees
--------------------
`item` (the dataset row, a dict), `grid` (the trial's grid cell, a dict) and each
grid value by its name, `model` (the model's label), `repeat` (0-based), `seed`
(an int), `turn` (the 1-based number of the turn being rendered, an int) and
`turns`, the turns already answered, oldest first. A turn has two fields, both
strings: `user` (the user message of that turn) and `response` (the model's
answer). The first messages see `turn` 1 and no turns; `followups[k]` sees
`turn` k+2 and k+1 turns, so `turns[-1].response` is the previous answer.

Checks before anything is sent
------------------------------
`Conversation.check_names` reads each template's syntax tree: unknown names,
fields of a turn other than `user`/`response`, constant indices past the turns a
template sees, and fields of `turn` are config errors. `check_item` checks the
item fields every item must have and, on the first item, renders each template
once with a probe context of the real shape, so anything else that is undefined
(`(turns | last).respnse`) fails at load, not at turn 2 of every trial.

The rendering budget
--------------------
Templates render in `trialrun.sandbox`: Jinja's immutable sandbox, where each
render is bounded in loop iterations (1,000,000), output (1,000,000 characters)
and time (2 s), and a slow render stops at once on SIGINT or SIGTERM. Over
budget, the trial fails with a message naming the template; a template already
over budget with the first item fails at load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError

from trialrun import sandbox
from trialrun.config import RESERVED_TEMPLATE_NAMES, Experiment
from trialrun.errors import ConfigError, TrialrunError

TURN_FIELDS = ("user", "response")

_PLAIN_FIELD = re.compile(r"\{\{\s*item\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


# ------------------------------------------------------------------ one template


class Template:
    """One compiled message template that knows which item fields it reads."""

    def __init__(self, source: str, where: str) -> None:
        self.source = source
        self.where = where
        try:
            ast = sandbox.ENV.parse(source)
            self.names = _top_level_names(ast)
            self.item_fields = _item_fields(ast)
            self.ast = ast
            env = sandbox.ENV
            metered = sandbox.meter_loops(env.parse(source))
            self._compiled = env.template_class.from_code(
                env, env.compile(metered), env.make_globals(None), None
            )
        except TemplateSyntaxError as exc:
            raise ConfigError(
                f"{where}: template syntax error, line {exc.lineno}: {exc.message}"
            ) from None
        self.static = not any(mark in source for mark in ("{{", "{%", "{#"))
        plain = _PLAIN_FIELD.fullmatch(source)
        self._plain_field = plain.group(1) if plain else None

    def check_fields(self, item: dict[str, Any], where: str) -> None:
        """One ConfigError line if `item` (at `where`) lacks a field this template reads
        without a default."""
        missing = self.item_fields - item.keys()
        if missing:
            raise ConfigError(
                f"{self.where}: uses item.{sorted(missing)[0]} but the item at {where} "
                f"has no such field (fields: {', '.join(sorted(item))})"
            )

    def render(self, context: dict[str, Any]) -> str:
        if self.static:
            return self.source
        if self._plain_field is not None:  # `{{ item.prompt }}`: skip Jinja's machinery
            value = context["item"].get(self._plain_field)
            if isinstance(value, str):
                return value
        try:
            return self.render_strictly(context)
        except sandbox.OverBudget as exc:
            raise TrialrunError(
                f"{self.where}: template exceeded the rendering budget ({exc}); "
                "make it do less work"
            ) from None
        except Exception as exc:  # any failure of a user's template fails the trial, not the run
            raise TrialrunError(f"{self.where}: cannot render template: {exc}") from None

    def render_strictly(self, context: dict[str, Any]) -> str:
        """Render within the budget, raising Jinja's and the sandbox's own errors."""
        return sandbox.render(self._compiled, context)


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
    return _key(node)


def _key(node: nodes.Node) -> str | None:
    """The constant name read by `x.name` or `x['name']`, else None."""
    if isinstance(node, nodes.Getattr):
        return node.attr
    arg = getattr(node, "arg", None)
    return arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None


# ------------------------------------------------------------------ the shape of turns

_SAME_ELEMENTS = frozenset({"reverse", "list", "sort", "unique", "select", "reject"})
_ONE_ELEMENT = frozenset({"first", "last", "random"})
_TURN_HINT = f"a turn has: {', '.join(TURN_FIELDS)}"


def _is_turn_list(node: nodes.Node | None) -> bool:
    """`turns`, a slice of it, or a filter that keeps its elements (`turns | reverse`)."""
    if isinstance(node, nodes.Name):
        return node.name == "turns"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice):
        return _is_turn_list(node.node)
    if isinstance(node, nodes.Filter) and node.name in _SAME_ELEMENTS:
        return _is_turn_list(node.node)
    return False


def _is_turn(node: nodes.Node, loop_names: set[str]) -> bool:
    """`turns[i]`, `turns | last`, or a loop variable bound by `for t in turns`."""
    if isinstance(node, nodes.Name):
        return node.name in loop_names
    if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Slice):
        return _is_turn_list(node.node)
    return isinstance(node, nodes.Filter) and node.name in _ONE_ELEMENT and _is_turn_list(node.node)


def _turn_loop_names(ast: nodes.Template) -> set[str]:
    """Names bound to one turn by `{% for t in turns %}` (scoped loosely: by name)."""
    return {
        loop.target.name
        for loop in ast.find_all(nodes.For)
        if isinstance(loop.target, nodes.Name) and _is_turn_list(loop.iter)
    }


def _turns_problem(ast: nodes.Template, seen: int) -> str | None:
    """What is wrong with how a template that sees `seen` turns reads `turns` and `turn`."""
    loop_names = _turn_loop_names(ast)
    methods = {id(call.node) for call in ast.find_all(nodes.Call)}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        target = getattr(node, "node", None)
        if isinstance(target, nodes.Name) and target.name == "turn":
            return "turn is the number of this turn (an int) and has no fields; " + (
                "the previous answer is turns[-1].response"
            )
        index = getattr(node, "arg", None)
        if _is_turn_list(target) and _out_of_range(index, seen):
            return _index_problem(index.value, seen)  # type: ignore[union-attr]
        if target is not None and _is_turn(target, loop_names) and id(node) not in methods:
            field = _key(node)
            if field is not None and field not in TURN_FIELDS:
                return f"a turn has no field '{field}' ({_TURN_HINT})"
    return None


def _out_of_range(index: nodes.Node | None, seen: int) -> bool:
    if not (isinstance(index, nodes.Const) and isinstance(index.value, int)):
        return False
    return not -seen <= index.value < seen


def _index_problem(index: int, seen: int) -> str:
    if seen == 0:
        return f"turns[{index}] does not exist: the first messages are sent before any answer"
    return (
        f"turns[{index}] does not exist: this template sees {seen} previous "
        f"turn{'s' if seen > 1 else ''} (turns[0] to turns[{seen - 1}], or turns[-1])"
    )


# ------------------------------------------------------------------ all templates


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
        self._probe = _probe_context(experiment)
        self._probed = False

    def templates(self) -> list[Template]:
        return [t for _, t in self.first] + self.followups

    def seen_turns(self) -> list[tuple[Template, int]]:
        """Each template with the number of answered turns it sees."""
        return [(t, 0) for _, t in self.first] + [(t, k + 1) for k, t in enumerate(self.followups)]

    def check(self, items: Iterable[dict[str, Any]]) -> None:
        """Fail now, with the template named, if any template reads a name or field that is not there."""
        self.check_names()
        for index, item in enumerate(items):
            self.check_item(item, f"item {index}")

    def check_names(self) -> None:
        """Every name a template reads is an item field, a grid name or a reserved name,
        and it reads `turns` and `turn` as they are (see the module docstring)."""
        for template in self.templates():
            unknown = template.names - self._allowed
            if unknown:
                name = sorted(unknown)[0]
                raise ConfigError(
                    f"{template.where}: unknown name '{name}' (use item.<field>, grid values by "
                    f"name, turns, turn, model, repeat, seed)"
                )
        for template, seen in self.seen_turns():
            problem = _turns_problem(template.ast, seen)
            if problem is not None:
                raise ConfigError(f"{template.where}: {problem}")

    def check_item(self, item: dict[str, Any], where: str) -> None:
        """The item has every field the templates read without a default (`where` names it);
        the first item checked also renders every template once (`_dry_render`)."""
        for template in self._reads_fields:
            template.check_fields(item, where)
        if not self._probed:
            self._probed = True
            self._dry_render(item, where)

    def _dry_render(self, item: dict[str, Any], where: str) -> None:
        """Render each template with `item`, the first grid cell and probe turns of the real
        shape: what is undefined there (or over budget) is undefined in every trial."""
        for template, seen in self.seen_turns():
            if template.static:
                continue
            turns = [{"user": "(probe message)", "response": "(probe answer)"}] * seen
            context = {**self._probe, "item": item, "turn": seen + 1, "turns": turns}
            try:
                template.render_strictly(context)
            except (UndefinedError, SecurityError) as exc:
                raise ConfigError(
                    f"{template.where}: {exc} (rendered with the item at {where}; {_TURN_HINT})"
                ) from None
            except sandbox.OverBudget as exc:
                raise ConfigError(
                    f"{template.where}: template exceeded the rendering budget ({exc}) "
                    f"with the item at {where}; make it do less work"
                ) from None
            except Exception:  # data-dependent: such a failure fails its trials at run time
                pass

    def first_messages(self, context: dict[str, Any]) -> list[dict[str, str]]:
        return [{"role": role, "content": t.render(context)} for role, t in self.first]

    def followup(self, index: int, context: dict[str, Any]) -> dict[str, str]:
        return {"role": "user", "content": self.followups[index].render(context)}


def _probe_context(experiment: Experiment) -> dict[str, Any]:
    """The names a trial's templates see, from the first model and grid cell."""
    grid = {name: values[0] for name, values in experiment.grid.items()}
    model = experiment.models[0].label if experiment.models else "model"
    return {"grid": grid, **grid, "model": model, "repeat": 0, "seed": experiment.seed or 0}
