"""Data integrity: duplicates within a dataset, overlap between datasets, canaries.

The unit of comparison is an item's **text**: the chosen string fields' values (by default
every string field but the id, in field-name order; or the fields named), joined by a
newline and **normalised**: Unicode NFKC, then case-folded, then every run of whitespace
collapsed to one space and the ends stripped. Punctuation is kept.

- **exact**: two items with the same normalised text.
- **near**: word 5-shingles of the normalised text (a text shorter than 5 words is one
  shingle), MinHash with `NUM_PERM` permutations (seed 1) and LSH banding (`datasketch`)
  to find candidate pairs, each then kept only when the exact Jaccard similarity of the
  two shingle sets is at least the threshold (default 0.8). Exact duplicates are counted
  apart, never again as near ones.
- **n-gram overlap**: distinct word n-grams (default 13, as in GPT-3's contamination
  study) of one dataset's texts found in another's; a text shorter than n words has none.

Files are read with the dataset reader a run uses (JSON list, JSONL, CSV), so a check
sees the rows a run would. A run's `integrity: {disjoint_from, canaries}` uses the same
texts: `check_disjoint` refuses a dataset with any exact overlap, and `canaries_in`
names the canary strings (exact, case-sensitive substrings) that a trial's responses hold.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from trialrun.dataset import read_rows
from trialrun.errors import ConfigError, DatasetError, UsageError

NUM_PERM = 128
"""MinHash permutations: the Jaccard estimate's standard error is about 1/sqrt(128) = 0.09;
candidates are then checked exactly, so this bounds recall, not precision."""
SHINGLE = 5
"""Words per shingle for near-duplicate detection."""
EXAMPLES = 3
"""Examples kept per finding."""


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace runs collapsed to one space, ends stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass
class Entry:
    """One item of a checked file: where it is, and its normalised text."""

    where: str
    """The item's id (`file:id`) or, without one, its line or index (`file:12`)."""
    text: str


def item_text(item: dict[str, Any], fields: Sequence[str] | None, id_field: str) -> str:
    """The normalised text of `item`: the named fields' string values (missing or non-string
    ones skipped), or by default every string field but `id_field`, in field-name order."""
    names = fields if fields else sorted(k for k in item if k != id_field)
    parts = [item[name] for name in names if isinstance(item.get(name), str)]
    return normalise("\n".join(parts))


def read_entries(path: Path, fields: Sequence[str] | None, id_field: str = "id") -> list[Entry]:
    """Every row of a dataset file as an `Entry`; rows with no text are left out. A missing
    or unreadable file is one DatasetError line."""
    entries = []
    try:
        for position, row in read_rows(path):
            if not isinstance(row, dict):
                raise DatasetError(
                    f"{path}:{position}: expected an object with fields, got {type(row).__name__}"
                )
            item_id = row.get(id_field)
            where = (
                f"{path.name}:{item_id}" if item_id not in (None, "") else f"{path.name}:{position}"
            )
            text = item_text(row, fields, id_field)
            if text:
                entries.append(Entry(where, text))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such dataset file") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: a folder, not a dataset file") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read dataset ({exc.strerror})") from None
    return entries


# ------------------------------------------------------------------ shingles and MinHash


def shingles(text: str, size: int = SHINGLE) -> set[str]:
    words = text.split()
    if len(words) <= size:
        return {" ".join(words)}
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def ngrams(text: str, n: int) -> set[str]:
    words = text.split()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _minhash(grams: set[str]) -> Any:
    from datasketch import MinHash  # imported on use: it pulls in scipy (~0.4 s a command)

    signature = MinHash(num_perm=NUM_PERM, seed=1)
    signature.update_batch(gram.encode() for gram in grams)
    return signature


def _index(sets: list[set[str]], threshold: float) -> Any:
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    for index, grams in enumerate(sets):
        lsh.insert(index, _minhash(grams))
    return lsh


# ------------------------------------------------------------------ findings


@dataclass
class Finding:
    """A count of something found, with a few examples (pairs of locations)."""

    count: int = 0
    examples: list[list[Any]] = field(default_factory=list)

    def add(self, *example: Any) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(list(example))

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "examples": self.examples}


def duplicates(entries: list[Entry], threshold: float) -> dict[str, Any]:
    """Exact duplicates (each item whose text an earlier item has: `count`, with the groups
    they form) and near-duplicate pairs (Jaccard >= threshold, exact duplicates aside)."""
    first: dict[str, int] = {}
    exact, groups = Finding(), set()
    unique: list[int] = []
    for index, entry in enumerate(entries):
        seen = first.setdefault(entry.text, index)
        if seen != index:
            exact.add(entries[seen].where, entry.where)
            groups.add(seen)
        else:
            unique.append(index)
    sets = [shingles(entries[i].text) for i in unique]
    near = Finding()
    lsh = _index(sets, threshold)
    for a, grams in enumerate(sets):
        for b in sorted(lsh.query(_minhash(grams))):
            if b > a:
                similarity = jaccard(grams, sets[b])
                if similarity >= threshold:
                    near.add(
                        entries[unique[a]].where, entries[unique[b]].where, round(similarity, 3)
                    )
    return {
        "items": len(entries),
        "exact": {**exact.as_json(), "groups": len(groups)},
        "near": near.as_json(),
    }


def overlap(entries: list[Entry], against: list[Entry], threshold: float, n: int) -> dict[str, Any]:
    """How much of `entries` is in `against`: items with an exact match, items with a near
    match (and no exact one), and the distinct n-grams the two share (with the items of
    `entries` holding at least one)."""
    by_text = {e.text: e.where for e in against}
    exact, near = Finding(), Finding()
    other_sets = [shingles(e.text) for e in against]
    lsh = _index(other_sets, threshold)
    for entry in entries:
        if entry.text in by_text:
            exact.add(entry.where, by_text[entry.text])
            continue
        grams = shingles(entry.text)
        best = max(
            ((jaccard(grams, other_sets[b]), b) for b in lsh.query(_minhash(grams))),
            default=(0.0, -1),
        )
        if best[0] >= threshold:
            near.add(entry.where, against[best[1]].where, round(best[0], 3))
    theirs: set[str] = set().union(*(ngrams(e.text, n) for e in against))
    shared: set[str] = set()
    items = Finding()
    for entry in entries:
        found = ngrams(entry.text, n) & theirs
        if found:
            shared |= found
            items.add(entry.where, sorted(found)[0])
    return {
        "exact": exact.as_json(),
        "near": near.as_json(),
        "ngrams": {"n": n, "shared": len(shared), "items": items.as_json()},
    }


def check_data(
    files: Sequence[Path],
    against: Sequence[Path] = (),
    *,
    fields: Sequence[str] | None = None,
    id_field: str = "id",
    near: float = 0.8,
    n: int = 13,
) -> dict[str, Any]:
    """`trialrun check-data`: per file its duplicates, and per (file, other) their overlap.
    With `against`, each file is compared with each of those; without, the files with
    each other (every pair once)."""
    if not 0 < near <= 1:
        raise UsageError(f"--near {near}: expected a Jaccard threshold in (0, 1]")
    if n < 1:
        raise UsageError(f"--ngram {n}: expected a positive number of words")
    read = {path: read_entries(path, fields, id_field) for path in [*files, *against]}
    pairs = (
        [(a, b) for a in files for b in against]
        if against
        else [(a, b) for i, a in enumerate(files) for b in files[i + 1 :]]
    )
    return {
        "normalisation": "NFKC, case-folded, whitespace collapsed",
        "fields": list(fields) if fields else f"every string field but '{id_field}'",
        "near": {"shingle_words": SHINGLE, "num_perm": NUM_PERM, "threshold": near},
        "files": [{"file": str(path), **duplicates(read[path], near)} for path in files],
        "overlaps": [
            {"file": str(a), "against": str(b), **overlap(read[a], read[b], near, n)}
            for a, b in pairs
        ],
    }


def found_anything(report: dict[str, Any]) -> bool:
    """Whether `check_data` found any duplicate or overlap (the command then exits 1)."""
    dups = any(f["exact"]["count"] or f["near"]["count"] for f in report["files"])
    return dups or any(
        o["exact"]["count"] or o["near"]["count"] or o["ngrams"]["shared"]
        for o in report["overlaps"]
    )


# ------------------------------------------------------------------ a run's integrity


def check_disjoint(
    items: Iterable[dict[str, Any]],
    disjoint_from: Sequence[str],
    fields: Sequence[str] | None,
    id_field: str,
    base_dir: Path,
    source: str,
) -> None:
    """Refuse (one ConfigError line) a dataset any of whose items' texts is exactly, once
    normalised, the text of an item in a `disjoint_from` file."""
    if not disjoint_from:
        return
    mine = [(str(item.get(id_field)), item_text(item, fields, id_field)) for item in items]
    for name in disjoint_from:
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        try:
            theirs = {e.text: e.where for e in read_entries(path, fields, id_field)}
        except DatasetError as exc:
            raise ConfigError(f"{source}: integrity.disjoint_from: {exc}") from None
        hits = [(item_id, theirs[text]) for item_id, text in mine if text and text in theirs]
        if hits:
            item_id, where = hits[0]
            raise ConfigError(
                f"{source}: integrity.disjoint_from: {len(hits)} of {len(mine)} items overlap "
                f"{path} (exact normalised match; first: item '{item_id}' = {where}); remove "
                f"them, or see `trialrun check-data --against {path}`"
            )


def canaries_in(texts: Iterable[str | None], canaries: Sequence[str]) -> list[str]:
    """The canary strings (in config order) that any of `texts` holds, case-sensitive."""
    present = [t for t in texts if t]
    return [c for c in canaries if any(c in text for text in present)]


def count_flagged(records: Iterable[str]) -> int:
    """Records (as JSON text) whose `canaries` list is not empty; a substring test first,
    so most records are never parsed."""
    flagged = 0
    for record in records:
        if '"canaries":["' in record and orjson.loads(record).get("canaries"):
            flagged += 1
    return flagged
