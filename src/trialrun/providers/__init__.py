"""Model providers: the interface, the registry, and the built-in adapters."""

from trialrun.providers.base import Provider, available, create, provider

__all__ = ["Provider", "available", "create", "provider"]
