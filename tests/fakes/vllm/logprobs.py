"""vllm/logprobs.py's `Logprob` (the fields trialrun reads)."""

from dataclasses import dataclass


@dataclass
class Logprob:
    """Infos for supporting OpenAI compatible logprobs and token ranks."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


LogprobsOnePosition = dict[int, Logprob]
SampleLogprobs = list[LogprobsOnePosition]
