"""`trialrun verify RUN`: is this run folder what it says it is?

File by file, the files the run was made from (manifest.json `files`: config, dataset,
judge prompt files, `disjoint_from` datasets, scorer modules) are hashed again on disk and
said to `match`, be `changed` or `missing`. The config file, when it is still there, is
loaded again (with the run's overrides) to compare each message template and follow-up,
and the dataset is read again as the run read it to compare its items' hash. Then the
store: SQLite's `PRAGMA integrity_check`, every planned trial present, a record for each
finished trial, and the records identical to results.jsonl's lines (same trial ids, same
JSON text). Any line not `match`/`ok` makes the verdict a failure (exit 1).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trialrun.config import DatasetConfig, Experiment
from trialrun.config_yaml import read_yaml
from trialrun.dataset import load_dataset
from trialrun.errors import TrialrunError
from trialrun.export import RESULTS_NAME
from trialrun.hashing import content_hash
from trialrun.loading import validate
from trialrun.overrides import apply_overrides
from trialrun.plan import Shard, expand
from trialrun.provenance import file_hash, text_hash
from trialrun.runs import Run

GOOD = ("match", "ok", "unknown")
"""`unknown`: could not be checked (an older run, a run made from a dict); shown, not failed."""


@dataclass(frozen=True)
class VerifyLine:
    """One thing checked: what, where (a path, or the store), its status, and why."""

    what: str
    where: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in GOOD


def verify_run(run: Run) -> list[VerifyLine]:
    """Every check of `run`'s files and store, in order."""
    manifest = _manifest(run.path)
    meta = run.meta()
    lines = [_file_line(entry) for entry in manifest.get("files", [])]
    config = next((f["path"] for f in manifest.get("files", []) if f["role"] == "config"), None)
    if config is None and meta.get("source") not in (None, "config"):
        config = meta["source"]
    lines += _template_lines(config, meta, manifest.get("templates") or {})
    lines.append(_items_line(config, meta))
    return lines + _store_lines(run, meta)


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _file_line(entry: dict[str, Any]) -> VerifyLine:
    path = Path(entry["path"])
    if entry.get("sha256") is None:
        return VerifyLine(entry["role"], str(path), "unknown", "not readable when the run was made")
    now = file_hash(path)
    if now is None:
        return VerifyLine(entry["role"], str(path), "missing")
    if now != entry["sha256"]:
        return VerifyLine(
            entry["role"], str(path), "changed", f"sha256 {now[:12]} was {entry['sha256'][:12]}"
        )
    return VerifyLine(entry["role"], str(path), "match")


def _template_lines(
    config: str | None, meta: dict[str, Any], used: dict[str, Any]
) -> list[VerifyLine]:
    """Each message template and follow-up in the config on disk against the run's."""
    if config is None:
        return [VerifyLine("templates", "-", "unknown", "the run was made from a dict, not a file")]
    try:
        raw = apply_overrides(read_yaml(Path(config)), list(meta.get("overrides") or []))
        experiment = validate(raw, config)
    except TrialrunError as exc:
        status = "missing" if not Path(config).is_file() else "changed"
        return [VerifyLine("templates", config, status, str(exc).splitlines()[0][:120])]
    now = {
        **{
            f"messages[{i}]": content_hash(m.model_dump(mode="json"))
            for i, m in enumerate(experiment.messages)
        },
        **{f"followups[{i}]": text_hash(t) for i, t in enumerate(experiment.followups)},
    }
    was = {
        **{f"messages[{i}]": h for i, h in enumerate(used.get("messages", []))},
        **{f"followups[{i}]": h for i, h in enumerate(used.get("followups", []))},
    }
    lines = []
    for name in sorted(now.keys() | was.keys()):
        if name not in was:
            lines.append(VerifyLine(f"template {name}", config, "changed", "not in the run"))
        elif name not in now:
            lines.append(
                VerifyLine(f"template {name}", config, "changed", "no longer in the config")
            )
        else:
            status = "match" if now[name] == was[name] else "changed"
            lines.append(VerifyLine(f"template {name}", config, status))
    return lines


def _items_line(config: str | None, meta: dict[str, Any]) -> VerifyLine:
    """The dataset read again as the run read it (limit, sample), its items' hash compared."""
    cfg = DatasetConfig.model_validate(meta["experiment"]["dataset"])
    base = Path(config).resolve().parent if config else Path.cwd()
    where = str(base / cfg.path) if cfg.path else "dataset.items"
    try:
        now = load_dataset(cfg, base, config or "config").content_hash()
    except TrialrunError as exc:
        status = "missing" if cfg.path and not (base / cfg.path).exists() else "changed"
        return VerifyLine("dataset items", where, status, str(exc).splitlines()[0][:120])
    if now != meta.get("hashes", {}).get("data"):
        return VerifyLine(
            "dataset items", where, "changed", "the items read now differ from the run's"
        )
    return VerifyLine("dataset items", where, "match")


def _store_lines(run: Run, meta: dict[str, Any]) -> list[VerifyLine]:
    db = str(run.path / "trialrun.db")
    try:
        with run.store() as store:
            healthy = store.integrity_ok()
            counts = store.counts()
            records = {json.loads(r)["trial_id"]: r for r in store.records()}
            ids_line = _trial_ids_line(meta, store.trial_ids(), list(store.items()), db)
    except (sqlite3.Error, TrialrunError, ValueError) as exc:
        return [VerifyLine("store", db, "changed", f"cannot be read: {exc}")]
    lines = [
        VerifyLine("store integrity", db, "ok" if healthy else "changed", "PRAGMA integrity_check")
    ]
    total, planned = sum(counts.values()), meta.get("planned_trials")
    if planned is None:
        lines.append(
            VerifyLine(
                "planned trials", db, "unknown", f"{total:,} trials; the plan's count was not kept"
            )
        )
    else:
        status = "ok" if total == planned else "changed"
        lines.append(VerifyLine("planned trials", db, status, f"{total:,} of {planned:,} present"))
    lines.append(ids_line)
    finished = counts["done"] + counts["failed"]
    status = "ok" if len(records) == finished else "changed"
    detail = f"{len(records):,} records for {finished:,} finished trials"
    lines.append(VerifyLine("records", db, status, detail))
    lines.append(_results_line(run.path / RESULTS_NAME, records))
    return lines


def _results_line(path: Path, records: dict[str, str]) -> VerifyLine:
    """results.jsonl against the store's records: the same trial ids, identical JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return VerifyLine("results.jsonl", str(path), "missing")
    lines: dict[str, str] = {}
    for line in text.splitlines():
        try:
            lines[json.loads(line)["trial_id"]] = line
        except (ValueError, KeyError, TypeError):
            return VerifyLine("results.jsonl", str(path), "changed", "a line is not a record")
    only_store = sorted(records.keys() - lines.keys())
    only_file = sorted(lines.keys() - records.keys())
    differ = sorted(t for t in records.keys() & lines.keys() if records[t] != lines[t])
    problems = [
        (only_store, "missing from the file"),
        (only_file, "not in the store"),
        (differ, "differ from the store"),
    ]
    said = [f"{len(ids)} {why} (first {ids[0]})" for ids, why in problems if ids]
    if said:
        return VerifyLine("results.jsonl", str(path), "changed", "; ".join(said))
    return VerifyLine("results.jsonl", str(path), "match", f"{len(lines):,} records")


def _trial_ids_line(
    meta: dict[str, Any], stored: set[str], item_ids: list[str], db: str
) -> VerifyLine:
    """The trial ids the run's plan gives (its stored config and items, shard and limit)
    against those in the store: none missing, none extra."""
    experiment = Experiment.model_validate(meta["experiment"])
    shard = Shard.parse(meta["shard"]) if meta.get("shard") else None
    planned = {t.trial_id for t in expand(experiment, item_ids, shard, meta.get("limit"))}
    missing, extra = planned - stored, stored - planned
    if not missing and not extra:
        return VerifyLine("trial ids", db, "ok", f"the plan's {len(planned):,} ids, no other")
    parts = []
    if missing:
        parts.append(f"{len(missing):,} planned missing (e.g. {sorted(missing)[0]})")
    if extra:
        parts.append(f"{len(extra):,} not in the plan (e.g. {sorted(extra)[0]})")
    return VerifyLine("trial ids", db, "changed", "; ".join(parts))
