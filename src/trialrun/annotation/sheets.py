"""Blinded sheets: sampling trials for coders, and disagreements for adjudication.

A sheet's columns: `row_id`, `item_id`, the item's fields as `item.FIELD`, each turn's
answer as `turn_K_response`, then one empty column per schema field for the coder to fill.
The item id is shown: the same item appears in every condition, so it says nothing about
the model or grid cell. The model, grid values, repeat, seed, scores, judge verdicts and
trial id are never written. Rows are shuffled per sheet and numbered r0001, r0002, ...;
the map from row ids to trial ids goes only into the store.

Files are written under temporary names, the sheets committed to the store, then the
files renamed: a failure leaves neither a sheet without its file nor the reverse.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from trialrun.errors import ConfigError, UsageError
from trialrun.runs import Run, lock_run
from trialrun.store import SheetRow, Store
from trialrun.verdicts import VerdictField, VerdictSchema

ADJUDICATED = "adjudicated"
"""The coder name of adjudicated labels (imported from a disagreements sheet)."""
SHEETS_DIR = "annotation"
CODEBOOK = "codebook.md"
COMPARED_KINDS = ("enum", "bool", "int")
"""Field kinds raters are compared on (free text and real numbers are not categories)."""
_CODER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote: the sheets (name, coder, rows) and the files."""

    sheets: list[tuple[str, str, int]]
    files: list[Path]
    trials: int


# ---------------------------------------------------------------- schema and coders


def resolve_schema(run: Run, judge: str | None, schema: str | None) -> dict[str, Any]:
    """The compact schema of the labels: `--schema` (YAML), or the named (or only) judge's."""
    if judge is not None and schema is not None:
        raise UsageError("give --judge NAME or --schema YAML, not both")
    if schema is not None:
        return parse_schema_option(schema)
    judges = {j.label: j for j in run.experiment().judges()}
    if judge is not None:
        if judge not in judges:
            known = ", ".join(judges) or "none"
            raise UsageError(f"no judge named {judge!r} in {run.run_id} (its judges: {known})")
        return dict(judges[judge].schema_)
    if len(judges) == 1:
        return dict(next(iter(judges.values())).schema_)
    if not judges:
        raise UsageError(
            f"{run.run_id} has no judge to take the label fields from: give them with "
            "--schema, e.g. --schema '{answer: [pass, fail]}'"
        )
    raise UsageError(f"{run.run_id} has judges {', '.join(judges)}: name one with --judge NAME")


def parse_schema_option(text: str) -> dict[str, Any]:
    """`--schema '{answer: [pass, fail]}'` (YAML flow) as a checked compact schema."""
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or "not YAML")
        raise UsageError(f"--schema: {problem}; write e.g. '{{answer: [pass, fail]}}'") from None
    try:
        VerdictSchema.parse(spec, "x")
    except ConfigError as exc:
        raise UsageError(str(exc).replace("x.schema", "--schema", 1)) from None
    return dict(spec)


def coder_names(coders: str) -> list[str]:
    """`--coders 2` (coder1, coder2) or `--coders alice,bob`."""
    text = coders.strip()
    if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
        count = int(text)
        if count < 1:
            raise UsageError(f"--coders: {count} coders; give at least 1")
        return [f"coder{k}" for k in range(1, count + 1)]
    names = [name.strip() for name in text.split(",")]
    for name in names:
        check_coder(name, "--coders")
    if len(set(names)) != len(names):
        raise UsageError(f"--coders: a name is given twice in {text!r}")
    return names


def check_coder(name: str, option: str) -> None:
    if not _CODER_NAME.match(name):
        raise UsageError(
            f"{option}: {name!r} is not a coder name; use letters, digits, '_', '.', '-'"
        )
    if name == ADJUDICATED and option == "--coders":
        raise UsageError(f"--coders: {ADJUDICATED!r} is kept for adjudicated labels")


# ---------------------------------------------------------------- sampling


def assign(
    records: Sequence[dict[str, Any]], coders: Sequence[str], n: int, overlap: int, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """`n` distinct records drawn with `seed`: the first `overlap` go to every coder, the
    rest are dealt round-robin (an even split); each coder's rows are then shuffled."""
    if n < 1:
        raise UsageError(f"--n: {n}; sample at least 1 trial")
    if n > len(records):
        raise UsageError(f"--n: {n} is more than the run's {len(records)} done trials")
    if not 0 <= overlap <= n:
        raise UsageError(f"--overlap: {overlap} must be between 0 and --n ({n})")
    rng = random.Random(seed)
    chosen = rng.sample(list(records), n)
    shared, rest = chosen[:overlap], chosen[overlap:]
    sheets = {}
    for index, coder in enumerate(coders):
        rows = shared + rest[index :: len(coders)]
        rng.shuffle(rows)
        sheets[coder] = rows
    return sheets


# ---------------------------------------------------------------- export


def export_sheets(
    run: Run,
    *,
    coders: str,
    n: int,
    overlap: int,
    seed: int,
    judge: str | None = None,
    schema: str | None = None,
    output: Path | None = None,
) -> ExportSummary:
    """One blinded sheet per coder (CSV and JSONL) and a codebook, in `output` (default
    RUN/annotation/); the sheets' row-id -> trial-id maps go into the store."""
    spec = resolve_schema(run, judge, schema)
    fields = VerdictSchema.parse(spec, "schema")
    names = coder_names(coders)
    done = [record for record in run.records() if record["status"] == "done"]
    assigned = assign(done, names, n, overlap, seed)
    columns = sheet_columns(done_of(assigned), fields, [])
    folder = output or run.path / SHEETS_DIR
    with WritableRun(run) as store:
        suffix = _free_suffix(store, folder, names)
        sheets = [
            Sheet(f"{coder}-{suffix}", coder, columns, [_row(r, columns) for r in rows], rows)
            for coder, rows in assigned.items()
        ]
        files = write_sheets(store, folder, sheets, spec, fields)
    summary = [(s.name, s.coder, len(s.rows)) for s in sheets]
    return ExportSummary(summary, files, n)


def done_of(assigned: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [record for rows in assigned.values() for record in rows]


@dataclass
class Sheet:
    """A sheet about to be written: its rows (row_id set) and the records behind them."""

    name: str
    coder: str
    columns: list[str]
    rows: list[dict[str, Any]]
    records: list[dict[str, Any]]

    def key(self) -> dict[str, str]:
        return {
            row["row_id"]: record["trial_id"]
            for row, record in zip(self.rows, self.records, strict=True)
        }


def sheet_columns(
    records: Iterable[dict[str, Any]], fields: VerdictSchema, shown: list[str]
) -> list[str]:
    """row_id, item_id, item.FIELD..., turn_K_response..., the `shown` columns, then the
    label columns (the schema's fields)."""
    item_fields: dict[str, None] = {}
    turns = 0
    for record in records:
        item_fields.update(dict.fromkeys(record.get("item") or {}))
        turns = max(turns, len(record.get("turns") or []))
    context = ["row_id", "item_id", *(f"item.{f}" for f in item_fields)]
    context += [f"turn_{k}_response" for k in range(1, turns + 1)]
    for name in fields.names:
        if name in context:
            raise UsageError(f"schema field {name!r} has the name of a sheet column; rename it")
    return [*context, *shown, *fields.names]


def _row(record: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """A record's row: the item and the responses; everything else (labels) empty."""
    row: dict[str, Any] = dict.fromkeys(columns)
    row["item_id"] = record["item_id"]
    for name, value in (record.get("item") or {}).items():
        row[f"item.{name}"] = value
    for k, turn in enumerate(record.get("turns") or [], start=1):
        row[f"turn_{k}_response"] = turn.get("response")
    return row


def number_rows(rows: list[dict[str, Any]]) -> None:
    width = max(4, len(str(len(rows))))
    for k, row in enumerate(rows, start=1):
        row["row_id"] = f"r{k:0{width}d}"


def write_sheets(
    store: Store, folder: Path, sheets: list[Sheet], spec: dict[str, Any], fields: VerdictSchema
) -> list[Path]:
    """Each sheet as CSV and JSONL plus the codebook: temporary files, then the store's
    rows, then the renames."""
    folder.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[Path, Path]] = []
    try:
        for sheet in sheets:
            number_rows(sheet.rows)
            for path, text in (
                (folder / f"{sheet.name}.csv", _csv(sheet)),
                (folder / f"{sheet.name}.jsonl", _jsonl(sheet)),
            ):
                pending.append((_write_tmp(path, text), path))
        pending.append((_write_tmp(folder / CODEBOOK, codebook(fields)), folder / CODEBOOK))
        store.add_sheets(SheetRow(s.name, s.coder, s.key(), spec) for s in sheets)
    except BaseException:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in pending:
        tmp.replace(path)
    return [path for _, path in pending]


def _write_tmp(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    return tmp


def _csv(sheet: Sheet) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(sheet.columns)
    for row in sheet.rows:
        writer.writerow([_cell(row[c]) for c in sheet.columns])
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _jsonl(sheet: Sheet) -> str:
    return "".join(
        orjson.dumps({c: row[c] for c in sheet.columns}).decode() + "\n" for row in sheet.rows
    )


def codebook(fields: VerdictSchema) -> str:
    """What each label column takes, for the coders (written beside the sheets)."""
    lines = [
        "# Codebook",
        "",
        "Each row is one model response (`turn_K_response`) to the item shown (`item_id`,",
        "`item.*`). Fill every label column of a row, or leave all of them empty to skip",
        "the row (free-text columns may stay empty). Do not change `row_id`; columns you",
        "add are ignored on import.",
        "",
        "| column | type | allowed values |",
        "|---|---|---|",
    ]
    lines += [f"| {f.name} | {f.kind} | {allowed(f)} |" for f in fields.fields]
    return "\n".join(lines) + "\n"


def allowed(field: VerdictField) -> str:
    """The values a label column takes, in words."""
    if field.kind == "enum":
        return ", ".join(field.choices) + " (exactly as written)"
    if field.kind == "bool":
        return "true, false"
    if field.kind == "str":
        return "any text"
    low = "" if field.minimum is None else f" from {field.minimum}"
    high = "" if field.maximum is None else f" to {field.maximum}"
    what = "a whole number" if field.kind == "int" else "a number"
    return f"{what}{low}{high}"


def _free_suffix(store: Store, folder: Path, coders: Sequence[str]) -> int:
    """The smallest k such that no `<coder>-<k>` is a sheet of the store or a file."""
    taken = {sheet.sheet for sheet in store.sheets()}
    k = 1
    while any(f"{c}-{k}" in taken or (folder / f"{c}-{k}.csv").exists() for c in coders):
        k += 1
    return k


class WritableRun:
    """The run's store opened for writing under the run's lock."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def __enter__(self) -> Store:
        self.lock = lock_run(self.run.path)
        try:
            self.store = self.run.store(readonly=False)
        except BaseException:
            self.lock.close()
            raise
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()
        self.lock.close()


# ---------------------------------------------------------------- disagreements


def export_disagreements(
    run: Run,
    *,
    coders: str | None = None,
    output: Path | None = None,
    seed: int = 0,
) -> ExportSummary:
    """The trials two or more of `coders` labelled differently on any field, as one sheet
    for adjudication: blinded as coders' sheets are, each coder's labels shown (`FIELD.CODER`
    columns) beside empty label columns; the sheet's coder is `adjudicated`."""
    with run.store() as store:
        sheets, annotations = store.sheets(), store.annotations()
    spec = common_schema([s for s in sheets if s.coder != ADJUDICATED], "the coders' sheets")
    fields = VerdictSchema.parse(spec, "schema")
    chosen = _chosen_coders(coders, sorted({a.coder for a in annotations} - {ADJUDICATED}))
    labels: dict[str, dict[str, dict[str, Any]]] = {}
    for a in annotations:
        if a.coder in chosen:
            labels.setdefault(a.trial_id, {})[a.coder] = a.labels
    differ = {t for t, by in labels.items() if len(by) > 1 and _disagree(by, fields)}
    records = [r for r in run.records() if r["trial_id"] in differ]
    random.Random(seed).shuffle(records)
    if not records:
        return ExportSummary([], [], 0)
    shown = [f"{f}.{c}" for f in fields.names for c in chosen]
    columns = sheet_columns(records, fields, shown)
    rows = []
    for record in records:
        row = _row(record, columns)
        for coder, given in labels[record["trial_id"]].items():
            row.update({f"{f}.{coder}": given.get(f) for f in fields.names})
        rows.append(row)
    folder = output.parent if output else run.path / SHEETS_DIR
    with WritableRun(run) as store:
        name = (
            output.stem if output else f"{ADJUDICATED}-{_free_suffix(store, folder, [ADJUDICATED])}"
        )
        if store.sheet(name) is not None:
            raise UsageError(f"{output}: a sheet named {name!r} exists; choose another file name")
        sheet = Sheet(name, ADJUDICATED, columns, rows, records)
        files = write_sheets(store, folder, [sheet], spec, fields)
    return ExportSummary([(name, ADJUDICATED, len(rows))], files, len(rows))


def _chosen_coders(given: str | None, labelled: list[str]) -> list[str]:
    chosen = labelled if given is None else [c.strip() for c in given.split(",")]
    missing = [c for c in chosen if c not in labelled]
    if missing:
        raise UsageError(
            f"--coders: no labels from {missing[0]!r} (coders with labels: "
            f"{', '.join(labelled) or 'none'})"
        )
    if len(chosen) < 2:
        raise UsageError(
            f"disagreements need labels from two coders; found {', '.join(chosen) or 'none'}"
        )
    return chosen


def _disagree(by_coder: dict[str, dict[str, Any]], fields: VerdictSchema) -> bool:
    """Whether the coders' labels differ on a compared field (free text always differs)."""
    return any(
        len({json.dumps(labels.get(f.name)) for labels in by_coder.values()}) > 1
        for f in fields.fields
        if f.kind in COMPARED_KINDS
    )


def common_schema(sheets: Sequence[SheetRow], what: str) -> dict[str, Any]:
    """The one schema `sheets` were written for (an error when none is, or several are)."""
    schemas = {json.dumps(s.schema, sort_keys=True): s.schema for s in sheets if s.schema}
    if not schemas:
        raise UsageError("no annotation sheets in this run yet: write some with `annotate export`")
    if len(schemas) > 1:
        raise UsageError(f"{what} were written for different schemas; compare one at a time")
    return dict(next(iter(schemas.values())))
