"""manifest.json: what ran, on what, from what."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from trialrun.providers.registry import sdk_packages

PACKAGES = ("trialrun", "pydantic", "PyYAML", "Jinja2", "rich", "click", "orjson")
OPTIONAL_PACKAGES = sdk_packages()
"""The built-in providers' SDK packages and their pip extras, as the provider modules say."""


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
    return {"commit": commit, "dirty": bool(dirty.strip())}


def manifest(**fields: Any) -> dict[str, Any]:
    return {
        **fields,
        "versions": versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "argv": sys.argv,
    }
