"""Reading a filled sheet back: every label checked, then all stored or none.

The sheet is found by the file's name (`coder1-1.csv` is sheet `coder1-1`) or named with
`sheet=`; its row ids map to trial ids through the store, and its labels are checked
against the schema it was written for. CSV cells are text: a bool is `true` or `false`
(any case), an int a whole number, a float a number, an enum one of its values exactly
(surrounding spaces aside). JSONL values may be JSON's own types or the same texts.

A row whose label columns are all empty is skipped and counted; free-text (`str`) columns
may be empty in a labelled row (stored as ""). Anything else wrong (an unknown row id, a
label column missing, a value that does not fit, a row given twice, a half-filled row)
stops the import with one line naming the file, the row (its row id and line) and the
column, and nothing is stored. Importing a sheet again replaces that coder's labels for
the rows it labels.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from trialrun.annotation.sheets import WritableRun, allowed, check_coder
from trialrun.errors import UsageError
from trialrun.runs import Run
from trialrun.store import AnnotationRow, SheetRow
from trialrun.verdicts import VerdictError, VerdictField, VerdictSchema


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What an import stored: the sheet, the coder, rows imported and rows skipped (empty)."""

    sheet: str
    coder: str
    imported: int
    skipped: int


class _Bad(Exception):
    """One label does not fit; the message says what is expected."""


def import_sheet(
    run: Run, path: Path, *, coder: str | None = None, sheet: str | None = None
) -> ImportSummary:
    """Store the labels of a filled sheet (CSV or JSONL) as `coder`'s (default: the coder
    the sheet was written for), all of them or none."""
    name = sheet or path.stem
    with run.store() as store:
        found = store.sheet(name)
        names = [s.sheet for s in store.sheets()]
    if found is None:
        known = ", ".join(names) or "none yet"
        raise UsageError(
            f"{path}: no sheet named {name!r} in this run (sheets: {known}); name it with --sheet"
        )
    who = coder or found.coder
    check_coder(who, "--coder")
    if not found.schema:
        raise UsageError(f"{path}: sheet {name!r} has no schema stored; export it again")
    fields = VerdictSchema.parse(found.schema, "schema")
    rows, skipped = _parse(path, found, fields, who)
    with WritableRun(run) as store:
        store.put_annotations(rows)
    return ImportSummary(name, who, len(rows), skipped)


def _parse(
    path: Path, sheet: SheetRow, fields: VerdictSchema, coder: str
) -> tuple[list[AnnotationRow], int]:
    """Every row's labels checked; the first problem raises a one-line UsageError."""
    rows: list[AnnotationRow] = []
    seen: dict[str, int] = {}
    skipped = 0
    for line, row in _read(path, fields):
        row_id = _text(row.get("row_id")).strip()
        where = f"{path}: row {row_id or '(no row_id)'} (line {line})"
        if row_id not in sheet.rows:
            raise UsageError(f"{where}, column 'row_id': not a row of sheet {sheet.sheet!r}")
        if row_id in seen:
            raise UsageError(f"{where}: row_id given twice (first on line {seen[row_id]})")
        seen[row_id] = line
        labels = _labels(row, fields, where)
        if labels is None:
            skipped += 1
            continue
        rows.append(AnnotationRow(sheet.rows[row_id], coder, sheet.sheet, row_id, labels))
    return rows, skipped


def _labels(row: dict[str, Any], fields: VerdictSchema, where: str) -> dict[str, Any] | None:
    """A row's labels, None when every non-text label is empty."""
    empty = [f.name for f in fields.fields if _empty(row[f.name])]
    required = [f.name for f in fields.fields if f.kind != "str"]
    if required and all(name in empty for name in required):
        return None
    labels: dict[str, Any] = {}
    for field in fields.fields:
        value = row[field.name]
        if field.name in empty and field.kind != "str":
            raise UsageError(
                f"{where}, column {field.name!r}: empty; expected {allowed(field)} "
                "(fill every label column of a row, or none)"
            )
        try:
            labels[field.name] = _coerce(field, "" if value is None else value)
        except _Bad as bad:
            raise UsageError(f"{where}, column {field.name!r}: {bad}") from None
    return labels


def _coerce(field: VerdictField, value: Any) -> Any:
    """The label as its field's type, checked with the schema's own rules."""
    if isinstance(value, str) and field.kind != "str":
        value = _from_text(field, value.strip())
    try:
        return VerdictSchema((field,)).validate({field.name: value})[field.name]
    except VerdictError as exc:
        reason = str(exc).removeprefix(f"field {field.name!r}: ")
        raise _Bad(f"expected {allowed(field)}; {reason}") from None


def _from_text(field: VerdictField, text: str) -> Any:
    shown = repr(text)
    if field.kind == "bool":
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise _Bad(f"expected true or false, not {shown}")
    if field.kind == "int":
        try:
            return int(text)
        except ValueError:
            raise _Bad(f"expected {allowed(field)}, not {shown}") from None
    if field.kind == "float":
        try:
            number = float(text)
        except ValueError:
            raise _Bad(f"expected {allowed(field)}, not {shown}") from None
        if not math.isfinite(number):
            raise _Bad(f"expected {allowed(field)}, not {shown}")
        return number
    return text  # enum: checked exactly by the schema


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _read(path: Path, fields: VerdictSchema) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for each row of a CSV or JSONL sheet; label columns checked."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise UsageError(f"{path}: expected a .csv or .jsonl sheet")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; save the sheet as UTF-8") from None
    if suffix == ".csv":
        yield from _read_csv(path, text, fields)
    else:
        yield from _read_jsonl(path, text, fields)


def _read_csv(path: Path, text: str, fields: VerdictSchema) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = reader.fieldnames or []
    for column in ("row_id", *fields.names):
        if column not in header:
            raise UsageError(f"{path}: line 1: missing column {column!r} (the sheet's header)")
    start = reader.line_num + 1
    try:
        for row in reader:
            if any(value for value in row.values() if isinstance(value, str)):
                yield start, row
            start = reader.line_num + 1
    except csv.Error as exc:
        raise UsageError(f"{path}: line {reader.line_num}: not CSV ({exc})") from None


def _read_jsonl(
    path: Path, text: str, fields: VerdictSchema
) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UsageError(f"{path}: line {line}: not a JSON object") from None
        if not isinstance(row, dict):
            raise UsageError(f"{path}: line {line}: not a JSON object")
        for column in ("row_id", *fields.names):
            if column not in row:
                row_id = row.get("row_id", "(no row_id)")
                raise UsageError(f"{path}: row {row_id} (line {line}), column {column!r}: missing")
        yield line, row
