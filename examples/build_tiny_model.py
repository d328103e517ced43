"""Build a tiny random-weight chat model for the introspection example, offline.

    python examples/build_tiny_model.py examples/tiny-model

A 6-layer Llama (hidden size 64, random seeded weights) and a BPE tokenizer trained on a
few sentences (trialrun.local.tiny), saved so that `hf/examples/tiny-model` loads it. Its
text is junk: it exercises the sweep end to end (layers, strengths, hooks, records,
judging), never the science. Needs the local extra (torch, transformers); no download.
"""

from __future__ import annotations

import sys

from trialrun.local.tiny import build_tiny_model

if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "examples/tiny-model"
    print(build_tiny_model(target, seed=0, layers=6))
