"""Load the dataset's items: JSON list, JSONL, CSV, or inline rows.

Rows are read one at a time, checked (an object, an id, unique ids, the fields the
templates read) and kept as their canonical JSON text until it is written to the run's
store: about 0.13 KB per short item, against about 0.6 KB as parsed dicts (measured at
100k items; bench/RESULTS.md, "When the dataset itself grows").
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from trialrun.config import DatasetConfig
from trialrun.config_yaml import MAX_DEPTH, too_deep
from trialrun.errors import DatasetError, unstorable_text
from trialrun.hashing import canonical_bytes
from trialrun.sampling import draw

Item = dict[str, Any]
ItemCheck = Callable[[Item, str], None]
"""Called with each item and where it was read; raises to reject it."""

Rows = Iterator[tuple[int, Any]]
"""(position, row): a line number for JSONL and CSV, an index for JSON lists and inline rows."""

TOO_DEEP = (
    f"the row nests more than {MAX_DEPTH} levels deep; flatten it, or keep the deep part "
    "as a JSON string"
)
"""Python's json and every walker after it recurse; a row nested 1,000 levels would crash them."""


class Dataset:
    """The checked items in order, each held as canonical JSON until written to a store."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._rows: list[str] = []
        self.sampling: dict[str, Any] | None = None
        """`dataset.sample` as drawn: its spec, the items read, sampled, and per stratum."""

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Item]:
        return (_decode(row) for row in self._rows)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def encoded(self) -> Iterator[tuple[str, str]]:
        """(item id, canonical JSON) pairs, the form the store keeps."""
        return zip(self._ids, self._rows, strict=True)

    def content_hash(self) -> str:
        """The same as `hashing.content_hash(list(self))`, without building the list."""
        digest = hashlib.sha256(b"[")
        for index, row in enumerate(self._rows):
            if index:
                digest.update(b",")
            digest.update(row.encode())
        digest.update(b"]")
        return digest.hexdigest()

    def release(self) -> None:
        """Drop the rows once they are in the store (the count and ids go too)."""
        self._ids.clear()
        self._rows.clear()

    def _add(self, item_id: str, encoded: str) -> None:
        self._ids.append(item_id)
        self._rows.append(encoded)


def load_dataset(
    cfg: DatasetConfig,
    base_dir: Path,
    source: str = "config",
    check: ItemCheck | None = None,
) -> Dataset:
    """Read and check every row; keep the first `cfg.limit` (ids stay unique across all rows)."""
    if cfg.items is not None:
        where = f"{source}: dataset.items"
        located: Callable[[int], str] = lambda i: f"{source}: dataset.items[{i}]"  # noqa: E731
        dataset = _check_rows(_inline(cfg.items), cfg, located, check)
    else:
        assert cfg.path is not None
        path = Path(cfg.path) if Path(cfg.path).is_absolute() else base_dir / cfg.path
        where = str(path)
        fmt = cfg.format or _format_of(path)
        located = (lambda i: f"{path}: item {i}") if fmt == "json" else (lambda n: f"{path}:{n}")
        try:
            dataset = _check_rows(_read_file(path, fmt), cfg, located, check)
        except FileNotFoundError:
            raise DatasetError(f"{path}: dataset file not found") from None
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read dataset ({exc})") from None
    if not len(dataset):
        raise DatasetError(f"{where}: the dataset has no items")
    if cfg.sample is not None:
        _sample(dataset, cfg, where)
    return dataset


def _sample(dataset: Dataset, cfg: DatasetConfig, where: str) -> None:
    """Keep `cfg.sample`'s seeded, stratified draw of the items (in their file order)."""
    spec = cfg.sample
    assert spec is not None
    strata: list[str] | None = None
    if spec.stratify is not None:
        strata = []
        for item_id, item in zip(dataset._ids, dataset, strict=True):
            if spec.stratify not in item:
                raise DatasetError(
                    f"{where}: item '{item_id}' has no field '{spec.stratify}' to stratify by "
                    "(dataset.sample.stratify)"
                )
            value = item[spec.stratify]
            strata.append(value if isinstance(value, str) else json.dumps(value))
    kept, per_stratum = draw(
        dataset._ids, strata, spec.n, seed=spec.seed, allocation=spec.allocation
    )
    read = len(dataset)
    dataset._ids = [dataset._ids[i] for i in kept]
    dataset._rows = [dataset._rows[i] for i in kept]
    dataset.sampling = {
        **spec.model_dump(mode="json"), "items_read": read, "sampled": len(kept),
        "strata": per_stratum,
    }  # fmt: skip


def _inline(rows: Iterable[Any]) -> Rows:
    """Inline rows belong to the frozen config: check a copy, never the config itself."""
    for index, row in enumerate(rows):
        yield index, dict(row) if isinstance(row, dict) else row


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


def read_rows(path: Path, fmt: str | None = None) -> Rows:
    """A dataset file's rows as a run reads them, unchecked (`check-data`, `integrity`):
    the format from `fmt` or the extension; a missing file raises FileNotFoundError."""
    return _read_file(path, fmt or _format_of(path))


def _read_file(path: Path, fmt: str) -> Rows:
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "csv":
        return _read_csv(path)
    return _read_json(path)


def _read_json(path: Path) -> Rows:
    try:
        text = path.read_text(encoding="utf-8-sig")
        data = json.loads(text)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: cannot read dataset ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise DatasetError(f"{path}{_deep_line(text)}: {TOO_DEEP}") from None
    except ValueError:  # an integer past sys.get_int_max_str_digits()
        raise DatasetError(f"{path}: {_LONG_INTEGER}") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of objects")
    data.reverse()  # pop from the end: each row is freed once it is checked and encoded
    for index in range(len(data)):
        yield index, data.pop()


def _read_jsonl(path: Path) -> Rows:
    """Lines split at \\n (and \\r\\n) only: a JSON string may hold U+2028 and friends."""
    with path.open(encoding="utf-8-sig", newline=None) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, _parse_line(path, number, line)
        except UnicodeDecodeError as exc:  # decoded in chunks: no exact line to name
            raise DatasetError(f"{path}: cannot read dataset ({exc})") from None


def _parse_line(path: Path, number: int, line: str) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass  # json.loads takes what orjson refuses (NaN, integers beyond 64 bits) or says why
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise DatasetError(f"{path}:{number}: {TOO_DEEP}") from None
    except ValueError:  # an integer past sys.get_int_max_str_digits()
        raise DatasetError(f"{path}:{number}: {_LONG_INTEGER}") from None


_LONG_INTEGER = (
    f"an integer longer than the {sys.get_int_max_str_digits():,} digits Python reads; "
    "quote it to keep it as text"
)


def _deep_line(text: str) -> str:
    """`:N`, the line where orjson (which stops at 1,024 levels, not at a crash) finds it too deep."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return f":{exc.lineno}"
    return ""


def _read_csv(path: Path) -> Rows:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            for row in reader:
                if None in row:
                    columns = len(reader.fieldnames or [])
                    raise DatasetError(
                        f"{path}:{reader.line_num}: {columns + len(row[None])} cells but the "
                        f"header has {columns} columns"
                    )
                yield reader.line_num, row
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}: cannot read dataset ({exc})") from None
        except csv.Error as exc:
            raise DatasetError(f"{path}:{reader.line_num}: invalid CSV: {exc}") from None


def _check_rows(
    rows: Rows, cfg: DatasetConfig, located: Callable[[int], str], check: ItemCheck | None
) -> Dataset:
    """Ids as strings and unique over every row; the first `cfg.limit` rows are kept."""
    dataset = Dataset()
    first_seen: dict[str, int] = {}
    for position, row in rows:
        if not isinstance(row, dict):
            raise DatasetError(
                f"{located(position)}: expected an object with fields, got {type(row).__name__}"
            )
        if row.get(cfg.id) in (None, ""):
            raise DatasetError(
                f"{located(position)}: no id field '{cfg.id}' "
                "(set dataset.id to the field holding item ids)"
            )
        item_id = str(row[cfg.id])
        if item_id in first_seen:
            raise DatasetError(
                f"{located(position)}: duplicate item id '{item_id}' "
                f"(first at {located(first_seen[item_id])})"
            )
        first_seen[item_id] = position
        if cfg.limit and len(dataset) >= cfg.limit:
            continue
        row[cfg.id] = item_id
        encoded = _encode(row, located(position))
        if check is not None:
            check(row, located(position))
        dataset._add(item_id, encoded)
    return dataset


def _encode(row: Item, where: str) -> str:
    """Canonical JSON text (a str is its exact size; orjson's bytes keep a 4 KB buffer),
    checked before the templates see the row. Counting brackets is the cheap first test of
    depth (strings may hold some); only a row with many is walked."""
    try:
        encoded = canonical_bytes(row).decode()
    except UnicodeEncodeError as exc:
        raise DatasetError(f"{where}: {unstorable_text(exc)}") from None
    except RecursionError:
        raise DatasetError(f"{where}: {TOO_DEEP}") from None
    if encoded.count("{") + encoded.count("[") > MAX_DEPTH and too_deep(row):
        raise DatasetError(f"{where}: {TOO_DEEP}")
    return encoded


def _decode(row: str) -> Item:
    try:
        item: Item = orjson.loads(row)
    except orjson.JSONDecodeError:  # NaN or huge integers, written by json.dumps
        item = json.loads(row)
    return item
