"""vllm/exceptions.py's `VLLMValidationError` (a ValueError, as in vLLM)."""

from typing import Any


class VLLMValidationError(ValueError):
    """An invalid request parameter."""

    def __init__(self, message: str, *, parameter: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value
