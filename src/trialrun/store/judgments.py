"""LLM judges' tables: `judgments`, one row per (trial, judge name, judge spec hash).

A judgment commits in the same transaction as the record that shows it: an online judge's
with the trial's record (the record is written once, verdicts in it), a later judge's with
the committed record rewritten (`patch_record`). So a record never shows a verdict the
table lacks, and the table's primary key keeps one outcome per trial and judge spec: a
re-judged failure replaces its row, a judge with a new spec adds rows beside the old.

A judge's calls are also logged in `attempts` under turn `JUDGE_TURN` (-1), so a crash
between a judge's answer and its judgment is answered from the store on resume, not paid
again; the trials' own queries (`spend`, cache hits) count turns >= 0 only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from trialrun.store.base import StoreBase
from trialrun.store.rows import JudgmentRow, ToJudge


@dataclass(frozen=True, slots=True)
class JudgeSpend:
    """Usage, cost and calls of one judgment's asks, as the attempts table logged them."""

    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    """None when an answer's cost is unknown."""
    latency_s: float
    calls: int
    """Attempts that reached the provider (cache hits are attempt 0)."""
    cache_hits: int
    started_at: str | None


JUDGE_TURN = -1
"""The `turn` of a judge's calls in `attempts` (and of its requests in batch mode, less the
judge's index: -1, -2, ...)."""


class JudgmentTables(StoreBase):
    """The judges' queries, mixed into `Store`."""

    # ------------------------------------------------------------ buffered writes

    def add_judgment(self, judgment: JudgmentRow) -> None:
        """Buffer a judgment; it commits at the next flush, with the record that shows it
        (the trial's new record, or a `patch_record` of the committed one)."""
        self._buffer.judgments.append(judgment)

    def patch_record(self, trial_id: str, record: str) -> None:
        """Buffer a committed record's new JSON (its verdicts filled in)."""
        self._buffer.patches.append((trial_id, record))

    def write_judgments(self, judgments: list[JudgmentRow], patches: list[tuple[str, str]]) -> None:
        """Insert judgments and rewrite patched records inside the caller's transaction."""
        self.conn.executemany(
            "INSERT OR REPLACE INTO judgments VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [judgment.row() for judgment in judgments],
        )
        self.conn.executemany(
            "UPDATE records SET record=? WHERE trial_id=?",
            [(record, trial_id) for trial_id, record in patches],
        )

    # ------------------------------------------------------------ reading

    def to_judge(
        self,
        judges: Iterable[tuple[str, str]],
        *,
        failed_only: bool = False,
        after_seq: int = -1,
        limit: int = 500,
    ) -> list[ToJudge]:
        """Done records, in plan order after `after_seq`, that one of `judges` ((name, spec
        hash) pairs) has not judged yet; with `failed_only`, those one of them failed on."""
        pairs = list(judges)
        if not pairs:
            return []
        condition, values = _condition(pairs, failed_only)
        rows = self.conn.execute(
            "SELECT r.seq, r.trial_id, r.record FROM records r WHERE r.status = 'done' AND "
            f"r.seq > ? AND ({condition}) ORDER BY r.seq LIMIT ?",
            [after_seq, *values, limit],
        ).fetchall()
        return [ToJudge(seq, trial_id, record) for seq, trial_id, record in rows]

    def count_to_judge(
        self, judges: Iterable[tuple[str, str]], *, failed_only: bool = False
    ) -> int:
        """How many records `to_judge` would give, all pages together."""
        pairs = list(judges)
        if not pairs:
            return 0
        condition, values = _condition(pairs, failed_only)
        row = self.conn.execute(
            f"SELECT COUNT(*) FROM records r WHERE r.status = 'done' AND ({condition})", values
        ).fetchone()
        return int(row[0])

    def judge_spend(self, trial_id: str, turn: int, keys: list[str]) -> JudgeSpend:
        """What the asks of one judgment (their cache keys) cost, summed over the attempts
        logged for the trial under `turn` (batch mode: one turn per judge)."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
            "SUM(cost_usd), COALESCE(SUM(response IS NOT NULL AND cost_usd IS NULL), 0), "
            "COALESCE(SUM(latency_s), 0), COALESCE(SUM(attempt > 0), 0), "
            "COALESCE(SUM(cache_hit), 0), MIN(started_at) FROM attempts "
            f"WHERE trial_id=? AND turn=? AND cache_key IN ({','.join('?' * len(keys))})",
            [trial_id, turn, *keys],
        ).fetchone()
        cost = None if row[3] else float(row[2] or 0.0)
        return JudgeSpend(row[0], row[1], cost, float(row[4]), row[5], row[6], row[7])

    def judgment_states(self, trial_id: str) -> dict[tuple[str, str], str]:
        """(judge, spec hash) -> state of a trial's judgments."""
        rows = self.conn.execute(
            "SELECT judge, spec_hash, state FROM judgments WHERE trial_id=?", (trial_id,)
        )
        return {(judge, spec): state for judge, spec, state in rows}

    def judgments(self, trial_id: str | None = None) -> list[dict[str, Any]]:
        """Judgment rows as dicts (verdict parsed), of one trial or all, in trial order."""
        where, args = ("WHERE j.trial_id = ?", (trial_id,)) if trial_id else ("", ())
        cursor = self.conn.execute(
            "SELECT j.* FROM judgments j LEFT JOIN trials t ON t.trial_id = j.trial_id "
            f"{where} ORDER BY t.seq, j.judge, j.finished_at",
            args,
        )
        names = [d[0] for d in cursor.description]
        out = []
        for row in cursor:
            data = dict(zip(names, row, strict=True))
            data["verdict"] = orjson.loads(data["verdict"]) if data["verdict"] else None
            data["cache_hit"] = bool(data["cache_hit"])
            out.append(data)
        return out

    def judge_counts(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Per (judge, spec hash): verdicts, errors, calls, tokens and the known cost (with
        how many judgments' costs are unknown)."""
        rows = self.conn.execute(
            "SELECT judge, spec_hash, SUM(state='done'), SUM(state='failed'), SUM(attempts), "
            "SUM(input_tokens), SUM(output_tokens), SUM(cost_usd), SUM(cost_usd IS NULL), "
            "SUM(cache_hit) FROM judgments GROUP BY judge, spec_hash"
        )
        keys = ("verdicts", "errors", "calls", "input_tokens", "output_tokens", "cost_usd")
        return {
            (row[0], row[1]): {
                **dict(zip(keys, row[2:8], strict=True)),
                "cost_unknown": row[8],
                "cache_hits": row[9],
            }
            for row in rows
        }

    def judge_error_kinds(self, judge: str, spec_hash: str) -> dict[str, int]:
        """How many of a judge's judgments failed, by kind (parse, schema, refusal, ...)."""
        rows = self.conn.execute(
            "SELECT COALESCE(error_kind, 'error'), COUNT(*) FROM judgments "
            "WHERE judge=? AND spec_hash=? AND state='failed' GROUP BY 1",
            (judge, spec_hash),
        )
        return {kind: n for kind, n in rows}

    def done_records(self) -> int:
        row = self.conn.execute("SELECT COUNT(*) FROM records WHERE status='done'").fetchone()
        return int(row[0])


def _condition(pairs: list[tuple[str, str]], failed_only: bool) -> tuple[str, list[Any]]:
    """SQL over `records r`: one of the judges has not judged it (or failed on it)."""
    if failed_only:
        one = (
            "EXISTS (SELECT 1 FROM judgments j WHERE j.trial_id = r.trial_id AND "
            "j.judge = ? AND j.spec_hash = ? AND j.state = 'failed')"
        )
    else:
        one = (
            "NOT EXISTS (SELECT 1 FROM judgments j WHERE j.trial_id = r.trial_id AND "
            "j.judge = ? AND j.spec_hash = ?)"
        )
    return " OR ".join([one] * len(pairs)), [v for pair in pairs for v in pair]
