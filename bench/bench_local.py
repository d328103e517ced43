"""Batched against one-at-a-time generation on the tiny local model on CPU (issue 15).

Builds the tiny random-weight model the tests use (trialrun.local.tiny: a 2-layer Llama,
hidden 64, ~100k parameters, a BPE tokenizer of ~300 tokens), loads it through the `hf/`
loader (trialrun.local.models.load: float32 on CPU), and generates the same `--prompts`
rendered prompts through trialrun.local.generation.generate_batch (the provider's own batch
call) in chunks of 1 (one at a time), 8 and 32. Greedy by default (`--temperature` for
seeded sampling), a fixed max_tokens; tokens/s counts the tokens each row really generated
(usage.output, the end token included), not the padding a finished row carries while its
batch goes on. Each batch size is timed `--repeats` times after one warm-up chunk; the
median is reported, with the decode steps run and the seconds per step, which is where the
time goes. Usage:

    python bench/bench_local.py                        # 64 prompts, 32 tokens, 3 repeats
    python bench/bench_local.py --temperature 0.7 --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trialrun.local.generation import Row
    from trialrun.local.models import LoadedModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "Do you notice anything unusual about your thoughts right now?",
    "Is this statement true or false? The ocean is deep.",
    "Describe a celebration.",
    "Fear is",
    "The quick brown fox jumps over the lazy dog near the river bank. What happens next?",
    "Answer briefly: yes or no.",
    "Silence is the absence of sound. Explain.",
    "Tell me about the waves.",
]
BATCH_SIZES = (1, 8, 32)


@dataclass
class Timing:
    batch_size: int
    seconds: float
    tokens: int
    steps: int
    calls: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def prompts(loaded: LoadedModel, count: int) -> list[list[int]]:
    from trialrun.local.generation import render_prompt

    texts = [f"{PROMPTS[i % len(PROMPTS)]} ({i})" for i in range(count)]
    return [render_prompt(loaded.tokenizer, [{"role": "user", "content": t}]) for t in texts]


def run_all(loaded: LoadedModel, rows: list[Row], batch_size: int) -> Timing:
    from trialrun.local.generation import generate_batch

    tokens = steps = calls = 0
    start = time.perf_counter()
    for at in range(0, len(rows), batch_size):
        results = generate_batch(loaded, rows[at : at + batch_size])
        tokens += sum(r.output_tokens for r in results)
        steps += max(r.output_tokens for r in results)
        calls += 1
    return Timing(batch_size, time.perf_counter() - start, tokens, steps, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (its default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)

    from trialrun.local.generation import Row
    from trialrun.local.models import load
    from trialrun.local.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        loaded = load(str(build_tiny_model(Path(folder) / "tiny")))
    ids = prompts(loaded, args.prompts)
    rows = [
        Row(p, args.max_tokens, temperature=args.temperature, seed=i) for i, p in enumerate(ids)
    ]
    print(
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
        f"{os.cpu_count()} CPUs, device {loaded.device}; {len(rows)} prompts of "
        f"{min(map(len, ids))}-{max(map(len, ids))} tokens, max_tokens {args.max_tokens}, "
        f"temperature {args.temperature}",
        file=sys.stderr,
    )
    results = {}
    for size in BATCH_SIZES:
        run_all(loaded, rows[:size], size)  # warm-up
        timings = [run_all(loaded, rows, size) for _ in range(args.repeats)]
        best = sorted(timings, key=lambda t: t.seconds)[len(timings) // 2]  # the median
        results[size] = best
        spread = [round(t.tokens_per_s) for t in timings]
        print(
            f"batch {size:>2}: {best.tokens_per_s:8.0f} tokens/s  ({best.tokens} tokens in "
            f"{best.seconds:.2f} s; {best.calls} calls, {best.steps} decode steps, "
            f"{1000 * best.seconds / best.steps:.1f} ms/step; runs {spread})",
            file=sys.stderr,
        )
    base = results[1].tokens_per_s
    for size in BATCH_SIZES[1:]:
        print(f"batch {size} / batch 1: {results[size].tokens_per_s / base:.1f}x", file=sys.stderr)
    if args.json:
        payload = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "median_of_repeats": {
                s: {**asdict(t), "tokens_per_s": t.tokens_per_s} for s, t in results.items()
            },
            "load_avg_1m": os.getloadavg()[0],
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
