"""The report's trial table: a bounded, evenly spread sample of the run's records, each
with its conversation (the prompts rendered again from the config's templates, as the
judge does, and the answers as stored), scores and verdicts.

The bound is twofold: at most `max_trials` rows (every k-th record in plan order, k chosen
from the record count), and at most `TABLE_BUDGET` bytes of HTML (every other row dropped
until it fits); each text is cut at `TEXT_LIMIT` characters. The page says which applied.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from trialrun.config import Experiment
from trialrun.errors import TrialrunError
from trialrun.templates import Conversation

if TYPE_CHECKING:
    from trialrun.report.data import ReportOptions

TEXT_LIMIT = 4_000
"""Characters of one message shown in the trial table; the rest is cut, with a note."""
TABLE_BUDGET = 7_000_000
"""Bytes of trial-table HTML at most, so the whole page stays under 10 MB."""


@dataclass
class TrialRow:
    """One trial as the table shows it: the summary cells, then its details (HTML)."""

    cells: list[str]
    search: str
    details: str


class TrialSampler:
    """Keeps every `stride`-th record offered, rendered as a `TrialRow`."""

    def __init__(
        self, experiment: Experiment, meta: dict[str, Any], total: int, options: ReportOptions
    ) -> None:
        self.total = total
        self.limit = max(options.max_trials, 0)
        self.stride = max(1, math.ceil(total / self.limit)) if self.limit else 0
        self.id_field = str(meta.get("id_field") or experiment.dataset.id or "id")
        self.scores = list(experiment.scores)
        self.offered = 0
        self.rows: list[TrialRow] = []
        self.halved = 0
        try:
            self.conversation: Conversation | None = Conversation(experiment, "config")
        except TrialrunError:
            self.conversation = None

    def offer(self, record: dict[str, Any]) -> None:
        index = self.offered
        self.offered += 1
        if self.stride and index % self.stride == 0 and len(self.rows) < self.limit:
            self.rows.append(self._row(record))

    def bounded(self) -> list[TrialRow]:
        """The rows, every other one dropped until their HTML fits `TABLE_BUDGET`."""
        rows = self.rows
        while rows and sum(len(r.details) + len(r.search) + 200 for r in rows) > TABLE_BUDGET:
            rows = rows[::2]
            self.halved += 1
        return rows

    def _row(self, record: dict[str, Any]) -> TrialRow:
        grid = ", ".join(f"{k}={v}" for k, v in (record.get("grid") or {}).items())
        turns = record.get("turns") or []
        last = str(turns[-1].get("response") or "") if turns else ""
        verdicts = _verdicts_text(record)
        scores = ", ".join(f"{k}={_short(v)}" for k, v in (record.get("scores") or {}).items())
        cells = [
            str(record.get("item_id")), str(record.get("model")), grid or "-",
            str(record.get("repeat", 0)), str(record.get("status")), scores, verdicts,
            _cut(last, 120) if turns else str(record.get("error") or ""),
        ]  # fmt: skip
        search = " ".join([*cells, str(record.get("trial_id")), last[:500]]).lower()
        return TrialRow(cells, search, self._details(record))

    def _details(self, record: dict[str, Any]) -> str:
        parts = [f"<div class=meta>trial {escape(str(record.get('trial_id')))} · seed "
                 f"{escape(str(record.get('seed')))} · params "
                 f"{escape(json.dumps(record.get('params') or {}, ensure_ascii=False))}</div>"]  # fmt: skip
        parts += [_message(m["role"], m["content"]) for m in self._conversation(record)]
        if record.get("error"):
            parts.append(f"<div class='msg error'><b>error</b>{_pre(str(record['error']))}</div>")
        if record.get("output") is not None:
            out = json.dumps(record["output"], ensure_ascii=False, indent=1, default=str)
            parts.append(f"<div class=msg><b>output</b>{_pre(out)}</div>")
        parts.append(_outcomes(record))
        return "".join(parts)

    def messages(self, record: dict[str, Any]) -> list[dict[str, str]]:
        """The trial's conversation as {role, content} dicts (see `_conversation`); the
        Inspect export's sample messages."""
        return self._conversation(record)

    def _conversation(self, record: dict[str, Any]) -> list[dict[str, str]]:
        """The user and assistant messages of the trial; the system and first user
        messages rendered again from the config (a template that fails now shows a note)."""
        turns = record.get("turns") or []
        grid = record.get("grid") or {}
        context: dict[str, Any] = {
            "item": {self.id_field: record.get("item_id"), **(record.get("item") or {})},
            "grid": grid, **grid, "model": record.get("model"), "repeat": record.get("repeat"),
            "seed": record.get("seed"), "turn": 1, "turns": [],
        }  # fmt: skip
        messages: list[dict[str, str]] = []
        history: list[dict[str, str]] = []
        for index in range(max(len(turns), 1)):
            messages += self._prompt(index, context, history)
            if index >= len(turns):
                break
            response = str(turns[index].get("response") or "")
            user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            history = [*history, {"user": user, "response": response}]
            messages.append({"role": "assistant", "content": response})
        return messages

    def _prompt(
        self, index: int, context: dict[str, Any], history: list[dict[str, str]]
    ) -> list[dict[str, str]]:
        if self.conversation is None:
            return [{"role": "note", "content": "(the prompt could not be rendered again)"}]
        try:
            if index == 0:
                return self.conversation.first_messages(context)
            if index - 1 >= len(self.conversation.followups):
                return []
            context.update(turn=index + 1, turns=history)
            return [self.conversation.followup(index - 1, context)]
        except Exception as exc:  # a template failing now must not stop the report
            return [{"role": "note", "content": f"(prompt not rendered again: {exc})"}]


def _verdicts_text(record: dict[str, Any]) -> str:
    judges = record.get("judges") or {}
    if not judges and record.get("judge") is not None:
        judges = {"judge": record["judge"]}
    errors = record.get("judge_errors") or {}
    parts = []
    for name, verdict in judges.items():
        if isinstance(verdict, dict):
            shown = ", ".join(f"{k}={_short(v)}" for k, v in verdict.items() if k != "reasoning")
            parts.append(shown if name == "judge" else f"{name}: {shown}")
        elif errors.get(name):
            parts.append(f"{name}: error")
    return "; ".join(parts)


def _outcomes(record: dict[str, Any]) -> str:
    rows = []
    for name, value in (record.get("scores") or {}).items():
        reason = (record.get("score_errors") or {}).get(name)
        shown = _short(value) if value is not None else f"null ({reason or 'no value'})"
        rows.append(("score", name, shown))
    errors = record.get("judge_errors") or {}
    judges = record.get("judges") or ({"judge": record["judge"]} if record.get("judge") else {})
    for name in dict.fromkeys([*judges, *errors]):
        verdict, error = judges.get(name), errors.get(name)
        if verdict is not None:
            rows.append(("verdict", name, json.dumps(verdict, ensure_ascii=False)))
        elif error:
            rows.append(("judge error", name, json.dumps(error, ensure_ascii=False)))
        else:
            rows.append(("verdict", name, "not judged"))
    for index, turn in enumerate(record.get("turns") or []):
        usage = turn.get("usage") or {}
        rows.append((
            "turn", str(index + 1),
            f"tokens {usage.get('input')}+{usage.get('output')} · {turn.get('latency_s')} s · "
            f"${turn.get('cost_usd')} · {turn.get('finish_reason')} · attempts "
            f"{turn.get('attempts')}{' · cache hit' if turn.get('cache_hit') else ''}",
        ))  # fmt: skip
    body = "".join(
        f"<tr><td>{escape(a)}</td><td>{escape(b)}</td><td>{escape(_cut(c, TEXT_LIMIT))}</td></tr>"
        for a, b, c in rows
    )
    return f"<table class=outcomes>{body}</table>" if body else ""


def _message(role: str, content: str) -> str:
    return f"<div class='msg {escape(role)}'><b>{escape(role)}</b>{_pre(content)}</div>"


def _pre(text: str) -> str:
    return f"<pre>{escape(_cut(text, TEXT_LIMIT))}</pre>"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return _cut(text, 60)
