"""A Jinja sandbox whose every render is bounded in work, size and time, and hears signals.

Rendering runs on the executor's event loop, so a template that loops for minutes
would stall every trial and keep the process deaf to SIGINT and SIGTERM (their
handlers run on that loop). Each `render` therefore gets one budget:

- every `for` loop iterates through a metering filter (`meter_loops` rewrites the
  syntax tree), MAX_ITERATIONS iterations in all, nested loops included;
- loop iterations, calls (recursive macros have no loop) and output chunks check a
  MAX_SECONDS deadline;
- `*`, `**`, `%`, `str.format`, width arguments (`center`, `ljust`, `batch`, ...),
  `replace` and `join` refuse a result over MAX_OUTPUT_CHARS (or MAX_INT_BITS)
  before Python builds it, and the output is capped at MAX_OUTPUT_CHARS;
- a render still running after SLOW_S notes SIGINT and SIGTERM (`_SignalListener`)
  and stops at its next check, leaving its trial pending as a cancelled await would.

Over budget raises `OverBudget`; `trialrun.templates` names the template. Memory is
bounded only as far as these checks reach: a loop that doubles a string in a
namespace is stopped by its iteration count and deadline, not by its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from types import FrameType
from typing import Any

import jinja2
from jinja2 import StrictUndefined, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_ITERATIONS = 1_000_000
MAX_OUTPUT_CHARS = 1_000_000
MAX_SECONDS = 2.0
SLOW_S = 0.005
MAX_INT_BITS = 100_000

_HUGE_FORMAT = re.compile(r"%[-+ #0]*(\d{7,}|\d*\.\d{7,})|\{[^{}]*:[^{}]*\d{7,}[^{}]*\}")
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_METERED = "_trialrun_metered"
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# ------------------------------------------------------------------ the budget


class OverBudget(Exception):
    """A render went over its budget; `Template.render` names the template."""


class _Budget:
    """What one render may still spend: loop iterations, and time until its deadline.

    A render still running after SLOW_S also listens for SIGINT and SIGTERM, so that
    it stops at its next check rather than at its deadline (see `_SignalListener`)."""

    __slots__ = ("deadline", "iterations", "listener", "slow_at")

    def __init__(self) -> None:
        now = time.monotonic()
        self.slow_at = now + SLOW_S
        self.deadline = now + MAX_SECONDS
        self.iterations = MAX_ITERATIONS
        self.listener: _SignalListener | None = None

    def tick(self) -> None:
        now = time.monotonic()
        if now < self.slow_at:
            return
        if now > self.deadline:
            raise OverBudget(f"it ran for over {MAX_SECONDS:g} s")
        if self.listener is None:
            self.listener = _SignalListener.start()
        self.listener.check()

    def spend(self) -> None:
        self.iterations -= 1
        if self.iterations < 0:
            raise OverBudget(f"its loops ran over {MAX_ITERATIONS:,} iterations")
        self.tick()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop()


@contextlib.contextmanager
def signals_stop_renders() -> Iterator[None]:
    """For a whole run on the current event loop: SIGINT or SIGTERM at any moment, not only
    during a slow render, makes this loop's renders stop at their next check. Enter it
    after the loop's own signal handlers are set (it wraps them)."""
    listener = _SignalListener.start()
    try:
        yield
    finally:
        listener.stop()
        if listener.loop is not None:
            _SIGNALLED.discard(listener.loop)


# Event loops that got SIGINT or SIGTERM during a render: their later renders stop too.
_SIGNALLED: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


class _SignalListener:
    """Lets a slow render on the executor's event loop hear SIGINT and SIGTERM.

    The executor's handlers run on the loop, which a render blocks, and hundreds of
    workers may each start one before the loop turns. So while a slow render runs,
    the signals' Python handlers are wrapped to note the signal for this loop (the
    loop still gets it, through its wakeup fd); the render, and every later render on
    this loop, then raises CancelledError at its next check, as an await would when
    the executor cancels its workers: the trial is left pending, not failed.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.previous: dict[int, Callable[[int, FrameType | None], Any]] = {}

    @classmethod
    def start(cls) -> _SignalListener:
        try:
            listener = cls(asyncio.get_running_loop())
        except RuntimeError:  # no loop: Python's own handlers already interrupt a render
            return cls(None)
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                previous = signal.getsignal(signum)
                if callable(previous):  # SIG_DFL ends the process anyway; SIG_IGN ignores
                    listener.previous[signum] = previous
                    signal.signal(signum, listener._on_signal)
        return listener

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.loop is not None:
            _SIGNALLED.add(self.loop)
        self.previous[signum](signum, frame)

    def check(self) -> None:
        if self.loop is not None and self.loop in _SIGNALLED:
            raise asyncio.CancelledError("interrupted while rendering a template")

    def stop(self) -> None:
        for signum, previous in self.previous.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, previous)


_BUDGET: ContextVar[_Budget | None] = ContextVar("trialrun_render_budget", default=None)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick()


def _metered(iterable: Iterable[Any]) -> Iterator[Any]:
    """Every `for` loop iterates through this, so nested loops share one budget."""
    budget = _BUDGET.get() or _Budget()
    for value in iterable:
        budget.spend()
        yield value


def _check_size(size: int, what: str) -> None:
    if size > MAX_OUTPUT_CHARS:
        raise OverBudget(f"{what} would hold {size:,} items or characters")


def _check_product(left: Any, right: Any) -> None:
    """`'x' * 10**9` or `[1] * 10**9` is refused before Python builds it."""
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise OverBudget("a product would be too large a number")
        return
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(count, int):
            _check_size(len(seq) * count, "a repetition")


def _check_power(base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int) and exponent > 0):
        return
    if base.bit_length() * exponent > MAX_INT_BITS:
        raise OverBudget("a power would be too large a number")


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _HUGE_FORMAT.search(text):
        raise OverBudget("a format width or precision is too large")


def _check_widths(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int):
            _check_size(value, "a padded or batched value")


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = text.count(old) if old else len(text) + 1
        _check_size(len(text) + hits * max(len(new) - len(old), 0), "a replacement")


def _check_join(separator: Any, values: list[Any]) -> None:
    if isinstance(separator, str):
        _check_size(len(separator) * len(values), "a join")


def _guarded(check: Callable[..., None], func: Callable[..., Any]) -> Any:
    """`func` (a filter or global) with `check` run on its arguments first, less the
    context Jinja passes to filters marked `pass_eval_context` or `pass_environment`."""
    skip = 1 if hasattr(func, "jinja_pass_arg") else 0

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check(*args[skip:], **kwargs)
        return func(*args, **kwargs)

    return wrapper


def _check_value_and_widths(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_widths(args, kwargs)


def _check_lipsum(n: int = 5, *args: Any, **kwargs: Any) -> None:
    if isinstance(n, int) and n > 100:
        raise OverBudget("lipsum is limited to 100 paragraphs")


def _check_format_filter(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_format(value)


def _check_replace_filter(value: Any, old: Any = "", new: Any = "", *args: Any) -> None:
    _check_replace(value, old, new)


def _join_filter(join: Callable[..., str]) -> Callable[..., str]:
    """The `join` filter, measured on its values as a list (a generator has no length)."""

    @functools.wraps(join)
    def wrapper(context: Any, value: Any, separator: Any = "", *args: Any, **kwargs: Any) -> str:
        values = list(value)
        _check_join(separator, values)
        return join(context, values, separator, *args, **kwargs)

    return wrapper


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus the rendering budget (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self.filters[_METERED] = _metered
        for name in ("center", "indent", "batch", "slice"):
            self.filters[name] = _guarded(_check_value_and_widths, self.filters[name])
        self.filters["format"] = _guarded(_check_format_filter, self.filters["format"])
        self.filters["replace"] = _guarded(_check_replace_filter, self.filters["replace"])
        self.filters["join"] = _join_filter(self.filters["join"])
        lipsum: Callable[..., Any] = self.globals["lipsum"]  # type: ignore[assignment]
        self.globals["lipsum"] = _guarded(_check_lipsum, lipsum)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        else:
            _check_format(left)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Each call checks the deadline (recursive macros have no loop to meter)."""
        _tick()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(obj, "__name__", "")
            if name in _WIDTH_METHODS:
                _check_widths(args, kwargs)
            elif name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
            elif name == "join" and args:
                args = (list(args[0]), *args[1:])
                _check_join(owner, args[0])
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format(value.__self__)
        return wrapped


ENV = _BoundedSandbox()


def meter_loops(ast: nodes.Template) -> nodes.Template:
    """Route every `for` loop's iterable through the metering filter."""
    for loop in ast.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, _METERED, [], [], None, None, lineno=loop.lineno)
    return ast


def render(template: jinja2.Template, context: dict[str, Any]) -> str:
    """Render chunk by chunk within one budget, checking output size and time as it grows."""
    budget = _Budget()
    token = _BUDGET.set(budget)
    try:
        parts = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise OverBudget(f"its output passed {MAX_OUTPUT_CHARS:,} characters")
            parts.append(chunk)
            budget.tick()
        return "".join(parts)
    finally:
        budget.close()
        _BUDGET.reset(token)
