"""Reusable test doubles of the outside world: local servers that speak providers' wire formats.

Needs `aiohttp` (in the `dev` extra). Nothing here is imported by trialrun itself.
"""

from trialrun.testing.fake_servers import BatchFaults, FakeServer, Faults

__all__ = ["BatchFaults", "FakeServer", "Faults"]
