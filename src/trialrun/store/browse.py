"""Reading committed records a page at a time, filtered: the dashboard's record browser.

Pages are keyed by `seq` (plan order): a page asks for records after the last `seq` it
showed, so a deep page costs what the first one does and a run that keeps writing never
shifts the rows under the reader. Filters on columns (model, cell, status) and on JSON
values inside the record (a score, a judge's field) are bound as parameters, never pasted
into the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trialrun.store.base import StoreBase


@dataclass(frozen=True)
class RecordQuery:
    """Which records, and which page of them. `json` holds (JSON path into the record, the
    value it must have): True/False/None match JSON true/false/null (None also matches a
    missing key), numbers match numerically, strings exactly."""

    model: str | None = None
    grid: str | None = None
    """A cell's grid as the store keeps it (canonical JSON, as `summary()` gives it)."""
    status: str | None = None
    json: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    after_seq: int = -1
    limit: int = 50


@dataclass(frozen=True)
class RecordPage:
    """One page: (seq, record JSON) pairs in plan order, and whether more match after it."""

    rows: list[tuple[int, str]]
    more: bool


class BrowseQueries(StoreBase):
    """The record browser's query, mixed into `Store`."""

    def record_page(self, query: RecordQuery) -> RecordPage:
        where, args = ["seq > ?"], [query.after_seq]
        for column in ("model", "grid", "status"):
            value = getattr(query, column)
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        for path, value in query.json:
            condition, values = _json_condition(path, value)
            where.append(condition)
            args += values
        sql = f"SELECT seq, record FROM records WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        rows = self.conn.execute(sql, [*args, query.limit + 1]).fetchall()
        return RecordPage(
            [(int(s), str(r)) for s, r in rows[: query.limit]], len(rows) > query.limit
        )


def _json_condition(path: str, value: Any) -> tuple[str, list[Any]]:
    if value is None:
        return "COALESCE(json_type(record, ?), 'null') = 'null'", [path]
    if isinstance(value, bool):
        return "json_type(record, ?) = ?", [path, "true" if value else "false"]
    if isinstance(value, int | float):
        return "(json_type(record, ?) IN ('integer', 'real') AND json_extract(record, ?) = ?)", [
            path,
            path,
            value,
        ]
    return "(json_type(record, ?) = 'text' AND json_extract(record, ?) = ?)", [path, path, value]
