"""A tiny random-weight causal LM with an offline-trained tokenizer, saved to a folder.

For tests and examples on machines that cannot download weights: `build_tiny_model(path)`
trains a byte-level BPE tokenizer on a few sentences (vocabulary ~300, with a Jinja chat
template), builds a 2-layer Llama with hidden size 64 (~100k parameters, random weights,
seeded) and saves both, so that `hf/<path>` loads it like any model folder. Its text is
junk: test structure, determinism and changes, never content.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_CORPUS = [
    "The ocean is deep and blue, and the waves are loud.",
    "A celebration with music, cake and friends in the evening.",
    "Fear is a feeling of danger; silence is the absence of sound.",
    "Do you notice anything unusual about your thoughts right now?",
    "Answer briefly: is this statement true or false? Yes or no.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
]
SPECIALS = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]


def build_tiny_model(
    path: str | Path, *, seed: int = 0, layers: int = 2, hidden: int = 64, chat: bool = True
) -> Path:
    """Save a tiny random Llama and its tokenizer to `path`; returns the folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(_CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token="<|pad|>",
        eos_token="<|end|>",
        padding_side="left",
    )
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    return folder
