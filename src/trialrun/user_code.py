"""Importing a user's `package.module:function` (a scorer's function, a custom trial).

The module is looked for in the current folder, the config's folder (a `tasks.py` beside
the config) and the Python path; the config's folder is on `sys.path` only while it is
imported. Any failure is the config's mistake: one `ConfigError` line naming `where`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trialrun.errors import ConfigError


def import_function(path: str, where: str, source: str = "") -> Callable[..., Any]:
    """The callable `path` names (`package.module:function`); `source` is the config file."""
    module_name, _, name = path.partition(":")
    folder = str(Path(source).resolve().parent) if source and Path(source).is_file() else None
    added = folder is not None and folder not in sys.path
    if added:
        sys.path.append(str(folder))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure to import a user's module is the config's
        raise ConfigError(f"{where}: cannot import {module_name} ({exc})") from None
    finally:
        if added:
            sys.path.remove(str(folder))
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"{where}: {module_name} has no function {name}")
    return function  # type: ignore[no-any-return]
