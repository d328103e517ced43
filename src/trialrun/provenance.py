"""manifest.json: what ran, on what, from what.

Besides versions, host and git state, the manifest names every file the run was made
from with the SHA-256 of its bytes (`files`: the config, the dataset, judge prompt files,
`integrity.disjoint_from` datasets, function scorers' modules), the hash of each template,
judge prompt and scorer spec (`templates`), the GPUs (`gpu`), and when a process last
stopped executing the run (`stopped_at`) and when it had no trial left (`finished_at`),
both written by `finish` with a temporary file and a rename. `trialrun verify` checks a
run folder against it (see `verification`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from trialrun.config import Experiment
from trialrun.executor.judge import is_prompt_file
from trialrun.hashing import content_hash
from trialrun.providers.registry import sdk_packages

PACKAGES = ("trialrun", "pydantic", "PyYAML", "Jinja2", "rich", "click", "orjson")
OPTIONAL_PACKAGES = {**sdk_packages(), "ray": "ray"}
"""The built-in providers' SDK packages and their pip extras, as the provider modules say,
and Ray (executor.ray)."""


def versions(names: tuple[str, ...] = PACKAGES + tuple(OPTIONAL_PACKAGES)) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_state(folder: Path) -> dict[str, Any] | None:
    """The commit (and whether the tree is dirty) of the repo holding the config, if any."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    state: dict[str, Any] = {"commit": commit, "dirty": bool(dirty.strip()), "diff_sha256": None}
    if state["dirty"]:
        state["diff_sha256"] = _diff_hash(folder)
    return state


def _diff_hash(folder: Path) -> str | None:
    """SHA-256 of `git diff HEAD` (tracked files' uncommitted changes, staged or not;
    untracked files are not in it), or None when git cannot say."""
    try:
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--no-ext-diff", "--no-color"],
            cwd=folder,
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return hashlib.sha256(diff).hexdigest()


# ------------------------------------------------------------------ GPUs


def gpu_info() -> list[dict[str, Any]] | None:
    """Each GPU's name, memory (MiB) and driver: from `nvidia-smi` when it is on the PATH,
    else from torch when a caller already imported it (never imported here); None when
    neither says."""
    if shutil.which("nvidia-smi"):
        found = _nvidia_smi()
        if found:
            return found
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        return [
            {
                "name": torch.cuda.get_device_name(i),
                "memory_mib": torch.cuda.get_device_properties(i).total_memory // (1 << 20),
                "driver": None,
                "cuda": torch.version.cuda,
            }
            for i in range(torch.cuda.device_count())
        ]
    except Exception:  # a broken CUDA setup is no reason to refuse a run
        return None


def _nvidia_smi() -> list[dict[str, Any]] | None:
    query = "--query-gpu=name,memory.total,driver_version"
    try:
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.strip().splitlines():
        name, memory, driver = ([*(p.strip() for p in line.split(",")), "", ""])[:3]
        gpus.append(
            {
                "name": name,
                "memory_mib": int(memory) if memory.isdigit() else None,
                "driver": driver or None,
            }
        )
    return gpus or None


# ------------------------------------------------------------------ files and templates


def file_hash(path: Path) -> str | None:
    """SHA-256 of a file's bytes, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def prompt_files(experiment: Experiment, base_dir: Path) -> dict[str, str]:
    """Judge name -> the prompt file it reads (absolute), for judges whose prompt is a file:
    taken before `read_prompt_files` replaces each name by the file's text."""
    return {
        judge.label: str((base_dir / judge.prompt.strip()).resolve())
        for judge in experiment.judges()
        if is_prompt_file(judge.prompt.strip())
    }


def template_hashes(experiment: Experiment) -> dict[str, Any]:
    """SHA-256 of each message template (`role` and `content`), follow-up, judge prompt (its
    text, files already read) and scorer spec; a function scorer also names its module's
    file and that file's hash where the module is imported."""
    scores: dict[str, Any] = {}
    for name, scorer in experiment.scores.items():
        entry: dict[str, Any] = {"sha256": content_hash(scorer.model_dump(mode="json"))}
        if scorer.function is not None:
            module = sys.modules.get(scorer.function.partition(":")[0])
            where = getattr(module, "__file__", None)
            entry["module"] = where
            entry["module_sha256"] = file_hash(Path(where)) if where else None
        scores[name] = entry
    return {
        "messages": [content_hash(m.model_dump(mode="json")) for m in experiment.messages],
        "followups": [text_hash(text) for text in experiment.followups],
        "judges": {judge.label: text_hash(judge.prompt) for judge in experiment.judges()},
        "scores": scores,
    }


def source_files(
    experiment: Experiment, source: str, base_dir: Path, prompts: dict[str, str]
) -> list[dict[str, Any]]:
    """Each file the run was made from: {role, path (absolute), sha256}."""
    found: list[tuple[str, Path]] = []
    if source != "config":
        found.append(("config", Path(source)))
    if experiment.dataset.path is not None:
        found.append(("dataset", base_dir / experiment.dataset.path))
    found += [(f"judge prompt {name}", Path(path)) for name, path in prompts.items()]
    found += [("disjoint_from", base_dir / p) for p in experiment.integrity.disjoint_from]
    for name, entry in template_hashes(experiment)["scores"].items():
        if entry.get("module"):
            found.append((f"scorer {name} module", Path(entry["module"])))
    return [
        {"role": role, "path": str(path.resolve()), "sha256": file_hash(path)}
        for role, path in found
    ]


# ------------------------------------------------------------------ the end of a run


def finish(folder: Path, stopped_at: str, complete: bool) -> None:
    """Record in manifest.json that a process stopped executing the run at `stopped_at`
    (and, when no trial is left, that it finished then): written whole to a temporary file,
    then renamed over the old one. A missing or unreadable manifest is left alone."""
    path = folder / "manifest.json"
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text(encoding="utf-8"))
        data["stopped_at"] = stopped_at
        if complete:
            data["finished_at"] = data.get("finished_at") or stopped_at
        tmp = path.with_name(f".manifest.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def manifest(**fields: Any) -> dict[str, Any]:
    return {
        **fields,
        "versions": versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "argv": sys.argv,
        "gpu": gpu_info(),
        "stopped_at": None,
        "finished_at": None,
    }
