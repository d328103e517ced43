"""Human annotation's tables: `annotation_sheets` (the blinding keys) and `annotations`.

A sheet is one file handed to one coder; its row `rows` is the only place that maps the
sheet's row ids to trial ids (the files never hold a trial id), and `schema` is the
verdict schema its label columns were written for. An annotation is one coder's labels
for one trial, keyed by (trial, coder): importing a sheet again replaces them. Writes are
all-or-nothing: a set of sheets, or a file's labels, commit in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from trialrun.store.base import StoreBase
from trialrun.store.schema import utcnow


@dataclass(frozen=True, slots=True)
class SheetRow:
    """A sheet: its name, its coder, the blinding key {row_id: trial_id} and the schema."""

    sheet: str
    coder: str
    rows: dict[str, str]
    schema: dict[str, Any] | None
    created_at: str = ""


@dataclass(frozen=True, slots=True)
class AnnotationRow:
    """One coder's labels (field -> value) for one trial, from one row of one sheet."""

    trial_id: str
    coder: str
    sheet: str | None
    row_id: str | None
    labels: dict[str, Any]
    imported_at: str = ""


class AnnotationTables(StoreBase):
    """Human annotation's queries, mixed into `Store`."""

    def add_sheets(self, sheets: Iterable[SheetRow]) -> None:
        """Record sheets (their blinding keys) in one transaction; a name taken is an error."""
        now = utcnow()
        with self._transaction():
            self.conn.executemany(
                "INSERT INTO annotation_sheets (sheet, coder, created_at, rows, schema) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (s.sheet, s.coder, now, _json(s.rows), _json(s.schema) if s.schema else None)
                    for s in sheets
                ],
            )

    def sheets(self) -> list[SheetRow]:
        """Every sheet, oldest first (none when the run predates annotation)."""
        if not self._has_table("annotation_sheets"):
            return []
        cursor = self.conn.execute("SELECT * FROM annotation_sheets ORDER BY created_at, sheet")
        names = [d[0] for d in cursor.description]
        found = []
        for values in cursor:
            row = dict(zip(names, values, strict=True))
            schema = orjson.loads(row["schema"]) if row.get("schema") else None
            found.append(
                SheetRow(row["sheet"], row["coder"], orjson.loads(row["rows"]), schema,
                         row["created_at"])
            )  # fmt: skip
        return found

    def sheet(self, name: str) -> SheetRow | None:
        return next((s for s in self.sheets() if s.sheet == name), None)

    def put_annotations(self, rows: Iterable[AnnotationRow]) -> int:
        """Store labels in one transaction, replacing the same coder's for the same trials;
        returns how many were written."""
        now = utcnow()
        values = [(r.trial_id, r.coder, r.sheet, r.row_id, _json(r.labels), now) for r in rows]
        with self._transaction():
            self.conn.executemany(
                "INSERT OR REPLACE INTO annotations (trial_id, coder, sheet, row_id, labels, "
                "imported_at) VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )
        return len(values)

    def annotations(self, coder: str | None = None) -> list[AnnotationRow]:
        """Stored labels (of one coder, or all), by coder then trial."""
        if not self._has_table("annotations"):
            return []
        where, args = ("WHERE coder = ?", (coder,)) if coder is not None else ("", ())
        rows = self.conn.execute(
            "SELECT trial_id, coder, sheet, row_id, labels, imported_at FROM annotations "
            f"{where} ORDER BY coder, trial_id",
            args,
        )
        return [
            AnnotationRow(trial_id, who, sheet, row_id, orjson.loads(labels), at)
            for trial_id, who, sheet, row_id, labels, at in rows
        ]

    def _has_table(self, name: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
