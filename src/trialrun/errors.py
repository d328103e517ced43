"""Every exception trialrun raises on purpose.

    TrialrunError                 root: a message meant for the user, printed as one line
    ├── UsageError                the user's input is wrong (exit status 2)
    │   ├── ConfigError           config file, key, type, override, template
    │   ├── DatasetError          dataset file or rows
    │   └── RunNotFoundError      a path or id that is not a run folder
    ├── StoreError                the run's database cannot be used (newer schema, locked)
    ├── ProviderError             one model call failed; `kind` says what the executor does
    └── RunIncomplete             a run ended with trials left pending (auth failure, stop)

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal["retryable", "final", "auth"]


class TrialrunError(Exception):
    """Root of trialrun's errors; `str(err)` is one line for the user."""

    exit_code = 1


class UsageError(TrialrunError):
    """The user's input is wrong; nothing was written."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file, key, value, override or template is wrong."""


class DatasetError(UsageError):
    """The dataset cannot be read or its rows are wrong."""


class RunNotFoundError(UsageError):
    """A path or id does not name a run folder."""


class StoreError(TrialrunError):
    """The run's database cannot be used as it is."""

    exit_code = 2


class ProviderError(TrialrunError):
    """One model call failed.

    `kind` tells the executor what to do: `retryable` (rate limit, overload, 5xx,
    timeout, dropped connection), `final` (the trial fails, the run goes on) or
    `auth` (stop every trial of that provider at once).
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind = "final",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.status = status
        self.retry_after = retry_after


class RunIncomplete(TrialrunError):
    """A run stopped with trials still pending; `trialrun resume` finishes it."""


def unstorable_text(exc: UnicodeEncodeError) -> str:
    """What is wrong with a text that cannot be UTF-8, for a user's error line."""
    bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode()
    return (
        f"text holds {bad}, a lone surrogate (an unpaired \\u escape or a byte that is not "
        "UTF-8), which cannot be stored; fix or remove it"
    )
