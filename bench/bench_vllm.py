"""hf/ against vllm/ on one GPU: the same small model, the same trials, tokens/s (issue 15).

NOT RUN YET. It needs what the machines this was written on lack: a CUDA GPU, vLLM
(`pip install 'trialrun[vllm]'`), torch and `trialrun[local]` for hf/, and the model in
the Hugging Face cache or a folder (it runs with HF_HUB_OFFLINE=1 and never downloads). So
bench/RESULTS.md has no figure from it; run it on a GPU and add one.

It writes one config (`--prompts` items of varied length, greedy, `--max-tokens`,
`top_logprobs: 5`) and runs it through the real CLI twice, once as `hf/<model>` and once as
`vllm/<model>`, each in a process of its own (so that one engine's memory cannot weigh on the
other). Throughput is the generated tokens (usage.output, the end token included) over the
span from the first trial's start to the last one's end, which leaves out loading; the
wall time with loading is reported beside it. It also checks, on the real engines, what the
tests could only check against a fake: that both providers count the same prompt tokens for
each item (same chat template, no extra special tokens), that both give 5 top logprobs per
generated token but the end token, and how many greedy answers agree (bf16 kernels differ, so
some may not). Usage:

    python bench/bench_vllm.py --model Qwen/Qwen2.5-0.5B-Instruct
    python bench/bench_vllm.py --model ./my-model --prompts 512 --max-tokens 128 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

SUBJECTS = [
    "the ocean",
    "a celebration",
    "fear",
    "silence",
    "the quick brown fox",
    "prime numbers",
    "a river bank at night",
    "why the sky is blue",
]


def config(model: str, prompts: int, max_tokens: int, options: dict[str, Any]) -> dict[str, Any]:
    items = [
        {"id": f"p{i}", "prompt": f"In {1 + i % 5} sentences, tell me about {s}."}
        for i, s in enumerate(SUBJECTS * (prompts // len(SUBJECTS) + 1))
    ][:prompts]
    return {
        "name": "bench-vllm",
        "seed": 1,
        "dataset": {"items": items},
        "models": [{"model": model, "options": options}],
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "params": {"max_tokens": max_tokens, "temperature": 0.0, "top_logprobs": 5},
        "output": {"dir": "runs"},
    }


def run(folder: Path, provider: str, args: argparse.Namespace) -> dict[str, Any]:
    options = {"batch_size": args.hf_batch} if provider == "hf" else {}
    path = folder / f"{provider}.yaml"
    spec = config(f"{provider}/{args.model}", args.prompts, args.max_tokens, options)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    runs = folder / provider / "runs"  # output.dir is relative to the working directory
    runs.parent.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRIALRUN_CACHE_DIR": str(folder / "cache")}
    started = time.perf_counter()
    command = [sys.executable, "-m", "trialrun", "run", str(path), "--quiet"]
    done = subprocess.run(
        command, cwd=runs.parent, env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{provider}: trialrun exited {done.returncode}\n{done.stderr[-2000:]}")
    [run_dir] = [p for p in runs.iterdir() if not p.name.startswith(".")]
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return summarise(provider, records, wall)


def summarise(provider: str, records: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    turns = [r["turns"][0] for r in records]
    starts = [_time(r["started_at"]) for r in records]
    ends = [_time(r["finished_at"]) for r in records]
    span = max(ends) - min(starts)
    tokens = sum(t["usage"]["output"] for t in turns)
    shape_ok = all(
        len(t["logprobs"]) == t["usage"]["output"] - (t["finish_reason"] == "stop")
        and all(len(step["top"]) == 5 for step in t["logprobs"])
        for t in turns
    )
    return {
        "provider": provider,
        "trials": len(records),
        "failed": sum(r["status"] != "done" for r in records),
        "tokens": tokens,
        "span_s": round(span, 3),
        "tokens_per_s": round(tokens / span, 1),
        "wall_s_with_load": round(wall, 1),
        "logprob_shape_ok": shape_ok,
        "input_tokens": {r["item_id"]: r["turns"][0]["usage"]["input"] for r in records},
        "texts": {r["item_id"]: r["turns"][0]["response"] for r in records},
    }


def versions() -> dict[str, str]:
    """vllm, torch and transformers as the runs import them, and the GPU (a fake vllm, as the
    tests use, says so in its version: its figures measure nothing)."""
    probe = (
        "import json, torch, transformers, vllm; print(json.dumps({'vllm': vllm.__version__, "
        "'torch': torch.__version__, 'transformers': transformers.__version__, 'gpu': "
        "torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-300:]}


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="hub id in the HF cache, or a folder")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--hf-batch", type=int, default=32, help="hf/ options.batch_size")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    found = versions()
    print(", ".join(f"{k} {v}" for k, v in found.items()))
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(Path(tmp), provider, args) for provider in ("hf", "vllm")]
    hf, vllm = results
    same_input = hf["input_tokens"] == vllm["input_tokens"]
    agree = sum(hf["texts"][k] == vllm["texts"].get(k) for k in hf["texts"])
    for r in results:
        print(
            f"{r['provider']:5} {r['trials']} trials ({r['failed']} failed), {r['tokens']:,} "
            f"tokens in {r['span_s']} s: {r['tokens_per_s']:,} tokens/s "
            f"({r['wall_s_with_load']} s with loading); logprob shape ok: {r['logprob_shape_ok']}"
        )
    print(f"vllm/hf tokens/s: {vllm['tokens_per_s'] / hf['tokens_per_s']:.1f}x")
    print(f"same prompt token counts per item: {same_input}")
    print(f"identical greedy answers: {agree} of {len(hf['texts'])}")
    if args.json:
        summary = {"model": args.model, **found, "same_input_tokens": same_input, "agree": agree}
        for r in results:
            r.pop("texts")
        args.json.write_text(json.dumps({**summary, "results": results}, indent=2))


if __name__ == "__main__":
    main()
