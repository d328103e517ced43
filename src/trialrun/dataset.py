"""Load the dataset's items: JSON list, JSONL, CSV, or inline rows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from trialrun.config import DatasetConfig
from trialrun.errors import DatasetError

Item = dict[str, Any]


def load_items(cfg: DatasetConfig, base_dir: Path, source: str = "config") -> list[Item]:
    """Read, check and limit the items; each keeps every field it had, id as a string."""
    if cfg.items is not None:
        rows = [(f"{source}: dataset.items[{i}]", _copy(row)) for i, row in enumerate(cfg.items)]
        where = f"{source}: dataset.items"
    else:
        assert cfg.path is not None
        path = Path(cfg.path) if Path(cfg.path).is_absolute() else base_dir / cfg.path
        rows = _read_file(path, cfg.format or _format_of(path))
        where = str(path)
    if not rows:
        raise DatasetError(f"{where}: the dataset has no items")
    items = _check_ids(rows, cfg.id)
    return items[: cfg.limit] if cfg.limit else items


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in {"json", "jsonl", "csv"}:
        return suffix
    if suffix == "ndjson":
        return "jsonl"
    raise DatasetError(
        f"{path}: unknown dataset format '.{suffix}'; use .json, .jsonl or .csv "
        "or set dataset.format"
    )


def _read_file(path: Path, fmt: str) -> list[tuple[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: dataset file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read dataset ({exc})") from None
    if fmt == "jsonl":
        return _read_jsonl(path, text)
    if fmt == "csv":
        return _read_csv(path, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of objects")
    return [(f"{path}: item {n}", row) for n, row in enumerate(data)]


def _read_csv(path: Path, text: str) -> list[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row:
            columns = len(reader.fieldnames or [])
            raise DatasetError(
                f"{where}: {columns + len(row[None])} cells but the header has {columns} columns"
            )
        rows.append((where, dict(row)))
    return rows


def _read_jsonl(path: Path, text: str) -> list[tuple[str, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
    return rows


def _check_ids(rows: list[tuple[str, Any]], id_field: str) -> list[Item]:
    """Ids as strings, unique; rows are updated in place (a dataset is not held twice)."""
    seen: dict[str, int] = {}
    items: list[Item] = []
    for index, (where, row) in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: expected an object with fields, got {type(row).__name__}")
        if id_field not in row or row[id_field] in (None, ""):
            raise DatasetError(
                f"{where}: no id field '{id_field}' (set dataset.id to the field holding item ids)"
            )
        item_id = str(row[id_field])
        if item_id in seen:
            first = rows[seen[item_id]][0]
            raise DatasetError(f"{where}: duplicate item id '{item_id}' (first at {first})")
        seen[item_id] = index
        row[id_field] = item_id
        items.append(row)
    return items


def _copy(row: Any) -> Any:
    """Inline rows belong to the frozen config: check a copy, never the config itself."""
    return dict(row) if isinstance(row, dict) else row
