"""Checks a researcher wants before a long run: Python, packages, disk, cache, keys."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from trialrun import providers
from trialrun.config import env_references, read_yaml
from trialrun.executor.cache import cache_dir
from trialrun.provenance import versions

MIN_FREE_BYTES = 1 << 30


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def environment_checks(runs_dir: Path = Path("runs")) -> list[Check]:
    checks = [Check("python", sys.version_info >= (3, 11), sys.version.split()[0])]
    for name, version in versions().items():
        checks.append(Check(f"package {name}", version is not None, version or "not installed"))
    probe = runs_dir if runs_dir.exists() else Path.cwd()
    free = shutil.disk_usage(probe).free
    checks.append(Check("disk", free >= MIN_FREE_BYTES, f"{free / 1e9:.1f} GB free at {probe}"))
    folder = cache_dir(None)
    checks.append(Check("cache", _writable(folder), str(folder)))
    return checks


def config_checks(config: Path) -> list[Check]:
    """Which providers and keys a config needs, and whether each key is set (never shown)."""
    raw = read_yaml(config)
    checks = []
    names = sorted(
        {
            str(m.get("model", "")).split("/", 1)[0]
            for m in raw.get("models") or []
            if isinstance(m, dict)
        }
    )
    for name in names:
        known = name in providers.available()
        checks.append(
            Check(
                f"provider {name}",
                known,
                "registered"
                if known
                else f"unknown (available: {', '.join(providers.available())})",
            )
        )
    needed = env_references(raw)
    for name in sorted(needed):
        checks.append(
            Check(
                f"env {name}",
                name in os.environ,
                "set" if name in os.environ else "not set: export it before running",
            )
        )
    return checks


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".doctor"
        probe.write_text("ok")
        probe.unlink()
        return True
    except OSError:
        return False
