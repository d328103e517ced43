"""The response cache: content-addressed, shared across runs in a user cache folder.

The key is a hash of exactly what goes on the wire, plus where it goes: provider, model,
base URL (the endpoint), the model entry's provider `options` (they can change the
request, e.g. the Anthropic API version decides whether temperature is sent), the
messages, the sampling params *as sent* (the seed among them), and the repeat and turn
index. The provider is the one that answers, so `--mock` answers never stand in for
real ones. Two requests that differ only in a param the provider cannot take are the
same request on the wire, and share an answer.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from trialrun.errors import StoreError
from trialrun.hashing import content_hash
from trialrun.store import connect, utcnow


def cache_dir(configured: str | None) -> Path:
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("TRIALRUN_CACHE_DIR"):
        return Path(os.environ["TRIALRUN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trialrun"


LOCAL_OPTIONS = frozenset({"transport", "concurrency"})
"""Options that change how trialrun talks to the server, never what it sends."""


def cache_key(
    provider: str,
    model: str,
    base_url: str | None,
    options: dict[str, Any],
    messages: list[dict[str, str]],
    params: dict[str, Any],
    repeat: int,
    turn: int,
) -> str:
    """The key of one request: `params` are those sent, `options` the model entry's."""
    wire_options = {k: v for k, v in options.items() if k not in LOCAL_OPTIONS}
    return content_hash([provider, model, base_url, wire_options, messages, params, repeat, turn])


class ResponseCache:
    """An SQLite table of key → response JSON; writes are buffered and flushed together."""

    def __init__(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.conn = connect(folder / "responses.db")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS responses "
                "(key TEXT PRIMARY KEY, response TEXT NOT NULL, created_at TEXT NOT NULL)"
            )
        except (OSError, sqlite3.DatabaseError) as exc:
            raise StoreError(
                f"{folder}: cannot open the response cache ({exc}); "
                "set cache.dir or cache.enabled=false"
            ) from None
        self._pending: list[tuple[str, str, str]] = []

    def get(self, key: str) -> str | None:
        row = self.conn.execute("SELECT response FROM responses WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, response: str) -> None:
        self._pending.append((key, response, utcnow()))

    def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT OR IGNORE INTO responses VALUES (?, ?, ?)", rows)
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.flush()
        self.conn.close()
