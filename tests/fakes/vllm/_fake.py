"""Not vLLM: what the fake saw, for the tests to read (cleared by them)."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChatCall:
    conversations: list[list[dict[str, Any]]]
    sampling_params: list[Any]
    kwargs: dict[str, Any]
    """The other keyword arguments `chat` was given (chat_template, use_tqdm, ...)."""


@dataclass
class Record:
    calls: list[ChatCall] = field(default_factory=list)
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    """("init" | "freed", model, LLM keyword arguments) in order."""

    def clear(self) -> None:
        self.calls.clear()
        self.events.clear()


RECORD = Record()
