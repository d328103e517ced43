"""`gates:`: early-stop rules checked as results commit.

    gates:
      - name: floor
        metric: judge.answer=pass     # any binary `trialrun stats` metric, or failed_rate
        group_by: model               # model (default), cell (model x grid values) or run
        min_n: 100                    # no decision before a group has this many values
        stop_if: "ci_high < 0.10"     # over rate, ci_low, ci_high, n, successes, missing
        action: stop                  # or pause

A rule decides on the Wilson 95% interval, not the raw rate, so a group that is merely
noisy at small n does not stop a run. A gate that fires stops the run cleanly (resumable)
and says which gate fired, on which group, with what numbers; `trialrun resume RUN
--ignore-gate NAME` goes on without it. `stop` and `pause` stop alike; a paused run reads
as waiting for a decision in `status`, a stopped one as ended early.

Tallies are kept per group as records commit (resume feeds them the committed records
first), so checking costs O(1) a record however long the run.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from trialrun import stats
from trialrun.config import Experiment, GateConfig
from trialrun.errors import ConfigError, UsageError
from trialrun.hashing import canonical
from trialrun.metrics import Metric, parse_metric

FAILED_RATE = "failed_rate"
"""The metric of a rule on errors: the share of finished trials that failed."""
NAMES = ("rate", "ci_low", "ci_high", "n", "successes", "missing")
"""What a `stop_if` expression may read."""
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def compile_rule(text: str, where: str) -> ast.Expression:
    """A `stop_if` expression, checked: comparisons of the names above and numbers, joined
    by and/or/not. Anything else is a one-line ConfigError."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ConfigError(
            f"{where}: '{text}' does not parse; write e.g. \"ci_high < 0.10\""
        ) from None
    for node in ast.walk(tree):
        allowed = (
            ast.Expression,
            ast.BoolOp,
            ast.And,
            ast.Or,
            ast.UnaryOp,
            ast.Not,
            ast.USub,
            ast.Compare,
            ast.Load,
            *_COMPARE,
        )
        if isinstance(node, ast.Name) and node.id not in NAMES:
            raise ConfigError(f"{where}: unknown name '{node.id}' (use {', '.join(NAMES)})")
        if isinstance(node, ast.Constant) and (
            isinstance(node.value, bool) or not isinstance(node.value, int | float)
        ):
            raise ConfigError(f"{where}: '{text}': only numbers may be compared")
        if not isinstance(node, (*allowed, ast.Name, ast.Constant)):
            raise ConfigError(
                f"{where}: '{text}': only comparisons joined by and/or/not, e.g. "
                '"ci_high < 0.10 and n >= 200"'
            )
    return tree


def _evaluate(node: ast.AST, env: dict[str, float]) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, env)
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(v, env) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, env)
        return (not value) if isinstance(node.op, ast.Not) else -value
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, env)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(right_node, env)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    raise AssertionError(f"unchecked node {type(node).__name__}")


@dataclass
class Firing:
    """A gate that fired: which, on which group, with what numbers."""

    gate: str
    action: str
    group: str
    numbers: dict[str, float]
    rule: str

    def message(self) -> str:
        n = self.numbers
        return (
            f"gate '{self.gate}' fired ({self.rule}) on {self.group}: rate {n['rate']:.3f}, "
            f"95% CI [{n['ci_low']:.3f}, {n['ci_high']:.3f}], n {int(n['n']):,}, "
            f"missing {int(n['missing']):,}"
        )


@dataclass
class _Gate:
    name: str
    spec: GateConfig
    metric: Metric | None
    """None for failed_rate."""
    rule: ast.Expression
    tallies: dict[str, list[int]] = field(default_factory=dict)
    """Group -> [values, successes, missing]."""

    def group(self, record: dict[str, Any]) -> str:
        by = self.spec.group_by
        if by == "run":
            return "the run"
        if by == "cell":
            return f"{record['model']} {canonical(record['grid'])}"
        return str(record["model"])

    def add(self, record: dict[str, Any]) -> None:
        tally = self.tallies.setdefault(self.group(record), [0, 0, 0])
        if self.metric is None:
            tally[0] += 1
            tally[1] += record.get("status") == "failed"
            return
        value = self.metric.value(record)
        if not isinstance(value, bool):  # missing (or a number from a score that is not a rate)
            tally[2] += 1
            return
        tally[0] += 1
        tally[1] += value

    def check(self) -> Firing | None:
        for group, (n, successes, missing) in self.tallies.items():
            if n < self.spec.min_n or n == 0:
                continue
            ci = stats.proportion_ci(successes, n)
            assert ci.low is not None and ci.high is not None  # n > 0
            env = {
                "rate": successes / n,
                "ci_low": ci.low,
                "ci_high": ci.high,
                "n": float(n),
                "successes": float(successes),
                "missing": float(missing),
            }
            if _evaluate(self.rule, env):
                return Firing(self.name, self.spec.action, group, env, self.spec.stop_if)
        return None


class Gates:
    """The config's gates, compiled, with tallies fed as records commit."""

    def __init__(self, experiment: Experiment, source: str, ignored: Iterable[str] = ()) -> None:
        skip = set(ignored)
        self.gates: list[_Gate] = []
        for index, spec in enumerate(experiment.gates):
            name = spec.name or f"gate-{index + 1}"
            where = f"{source}: gates[{index}]" if source else f"gates[{index}]"
            metric = None if spec.metric == FAILED_RATE else _binary(spec.metric, experiment, where)
            rule = compile_rule(spec.stop_if, f"{where}.stop_if")
            if name not in skip:
                self.gates.append(_Gate(name, spec, metric, rule))

    def __bool__(self) -> bool:
        return bool(self.gates)

    def add(self, record: dict[str, Any]) -> None:
        for gate in self.gates:
            gate.add(record)

    def check(self) -> Firing | None:
        """The first gate that fires now, if any."""
        for gate in self.gates:
            fired = gate.check()
            if fired is not None:
                return fired
        return None


def _binary(text: str, experiment: Experiment, where: str) -> Metric:
    try:
        metric = parse_metric(text, experiment)
    except UsageError as exc:
        raise ConfigError(f"{where}.metric: {exc}") from None
    if metric.kind == "numeric":
        raise ConfigError(
            f"{where}.metric: '{text}' is a number, and gates decide on rates: use a pass/fail "
            "metric (a bool score, judge.FIELD=VALUE) or failed_rate"
        )
    return metric


def gate_names(experiment: Experiment) -> list[str]:
    return [spec.name or f"gate-{i + 1}" for i, spec in enumerate(experiment.gates)]
