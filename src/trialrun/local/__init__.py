"""Local open-weight models: what the `hf/` provider runs on, and the steering helper.

- `models`: load a model and tokenizer from a folder or the HF cache (never downloading by
  default), choose device and dtype, free them.
- `generation`: one left-padded batch through `generate`, per-row seeded sampling,
  logprobs from the raw logits.
- `residency`: at most N local models (and lanes) at once in the process.
- `steering`: add a vector to a decoder layer's residual stream; concept vectors.
- `tiny`: a tiny random-weight model built offline, for tests and examples.

Each module imports torch and transformers only inside its functions, so importing
`trialrun.local` costs nothing where the `local` extra is not installed.
"""
