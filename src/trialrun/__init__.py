"""trialrun: run large LLM experiments fire-and-forget."""

from __future__ import annotations

__version__ = "0.1.0"

from trialrun.api import (
    Observer,
    Prepared,
    Run,
    aresume,
    arun,
    collect,
    list_runs,
    load,
    load_many,
    open_run,
    plan_summary,
    resume,
    run,
    run_prepared,
)
from trialrun.config import Experiment
from trialrun.errors import (
    ConfigError,
    DatasetError,
    ProviderError,
    RunIncomplete,
    TrialrunError,
    UsageError,
)

__all__ = [
    "ConfigError",
    "DatasetError",
    "Experiment",
    "Observer",
    "Prepared",
    "ProviderError",
    "Run",
    "RunIncomplete",
    "TrialrunError",
    "UsageError",
    "__version__",
    "aresume",
    "arun",
    "collect",
    "list_runs",
    "load",
    "load_many",
    "open_run",
    "plan_summary",
    "resume",
    "run",
    "run_prepared",
]
