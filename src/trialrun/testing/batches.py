"""Pieces the fake batch APIs share: refusals, ids, times, request checks and list pages."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
DAY_S = 86400
SERIALS = itertools.count(1)
"""Numbers every id a fake server hands out, so that no two servers in a process share one."""


class Rejected(Exception):
    """A batch endpoint's refusal of a request: an error of `status` in the provider's shape."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


def new_id(prefix: str) -> str:
    """A new id, unique in the process and the same from run to run."""
    return prefix + hashlib.sha256(f"{prefix}{next(SERIALS)}".encode()).hexdigest()[:24]


def rfc3339(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, tz=UTC).isoformat().replace("+00:00", "Z")


def stamp(moment: float | None) -> int | None:
    return None if moment is None else int(moment)


async def json_object(http: web.Request) -> dict[str, Any]:
    try:
        body = await http.json()
    except ValueError:
        raise Rejected(400, "request body is not JSON") from None
    if not isinstance(body, dict):
        raise Rejected(400, "request body is not a JSON object", body)
    return body


def unique(custom_ids: list[str]) -> None:
    repeated = sorted(name for name, n in Counter(custom_ids).items() if n > 1)
    if repeated:
        raise Rejected(400, f"custom_id must be unique within a batch; repeated: {repeated}")


def page_limit(text: str | None, *, most: int) -> int:
    if text is None:
        return 20
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= most:
        raise Rejected(400, f"limit must be an integer from 1 to {most}")
    return limit


def cursor_index(ids: list[str], cursor: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise Rejected(400, f"no batch with the cursor's id {cursor!r}") from None


def page_after(ids: list[str], cursor: str | None, limit: int) -> tuple[int, int]:
    """(start, stop) of the page of `limit` ids after `cursor` (from the first when None)."""
    start = 0 if cursor is None else cursor_index(ids, cursor) + 1
    return start, min(start + limit, len(ids))
