"""What the fake servers' wire formats share: message text and sized answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from aiohttp import web

from trialrun.providers.mock import answer
from trialrun.types import Request, Response

Kind = Literal["openai", "anthropic", "google"]


def text(content: Any) -> str:
    """A message's text whether given as a string or as a list of content blocks."""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def padded(
    request: Request, render: Callable[[Request, Response], dict[str, Any]], size: int
) -> bytes:
    """The answer's body, its text padded so that the whole is at least `size` bytes."""
    response = answer(request)
    short = len(json.dumps(render(request, response)))
    padding = " " + "x" * max(size - short, 0)
    return json.dumps(render(request, replace(response, text=response.text + padding))).encode()


Parse = Callable[[dict[str, Any], Any], Request]
Render = Callable[[Request, Response], dict[str, Any]]


@dataclass(frozen=True)
class Wire:
    """One provider's wire format as a fake server speaks it (its module's functions)."""

    parse: Parse
    """A request body (and the aiohttp request, for path parameters) as a neutral Request."""
    render: Render
    """A neutral answer as the provider's response body."""
    error: Callable[[int, str], dict[str, Any]]
    models: Callable[[tuple[str, ...]], dict[str, Any]]
    given_key: Callable[[web.Request], str]
    generate: tuple[str, str]
    """(path of the answering endpoint, path of the model list)."""
    url_suffix: str = ""
    """What the SDK's base URL has after host and port (`/v1` for OpenAI)."""
    overloaded: int = 503
    """The status of an overloaded answer."""
