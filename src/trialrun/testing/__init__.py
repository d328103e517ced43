"""Reusable test doubles of the outside world: local servers that speak providers' wire formats.

Needs `aiohttp` (in the `dev` extra). Nothing here is imported by trialrun itself. One
module per wire format (`openai_wire`, `anthropic_wire`, `gemini_wire`); the request path
with its faults (`endpoints`, `faults`), the batch store (`batch_endpoints`, `batches`),
the thread the server runs in (`lifecycle`) and `FakeServer` (`server`) are shared.
"""

from trialrun.testing.faults import BatchFaults, Faults
from trialrun.testing.server import FakeServer

__all__ = ["BatchFaults", "FakeServer", "Faults"]
