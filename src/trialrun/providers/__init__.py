"""Model providers: the interface, the registry, and the built-in adapters."""

from trialrun.providers.base import Provider
from trialrun.providers.batch import BatchAPI, BatchOutcome, BatchStatus
from trialrun.providers.registry import available, create, provider

__all__ = ["BatchAPI", "BatchOutcome", "BatchStatus", "Provider", "available", "create", "provider"]
