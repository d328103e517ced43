"""Loading and freeing a transformers causal LM and its tokenizer (the `hf/` provider's).

- **Where from.** A name that starts with `/`, `./`, `../` or `~`, or names a folder that
  exists, is a local folder (relative to the working directory); anything else is a hub id,
  read from the Hugging Face cache only (`local_files_only=True`): trialrun never downloads
  weights unless the entry's `options.download: true` says so.
- **Device.** cuda, then mps, then cpu; `options.device` overrides (`cuda:1`, `cpu`).
- **Dtype.** bfloat16 on a GPU that has it, else float16 on GPU/mps; float32 on cpu;
  `options.dtype` overrides (`float32`, `bfloat16`, `float16`).
- **Freeing.** `free` drops every reference, collects garbage and empties the CUDA (or
  MPS) cache. Inside one process this is what PyTorch offers; fragmentation may keep some
  memory reserved (see docs/design/notes.md on why no worker process per model yet).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trialrun.errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def is_path(name: str) -> bool:
    """Whether `name` means a local folder rather than a hub id."""
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().is_dir()


def check_source(name: str, download: bool = False) -> None:
    """A ConfigError naming what is missing: a folder that does not exist or holds no
    config.json, or (without `download`) a hub id that is not in the local cache."""
    if is_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"hf/{name}: no such folder")
        if not (folder / "config.json").is_file():
            raise ConfigError(f"hf/{name}: no config.json in that folder (not a model folder)")
        return
    if download:
        return
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    if not isinstance(found, str):
        raise ConfigError(
            f"hf/{name}: not in the Hugging Face cache and trialrun does not download; "
            f"run `hf download {name}` first, or set options.download: true"
        )


def pick_device(option: str | None = None) -> str:
    import torch

    if option:
        return option
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, option: str | None = None) -> Any:
    import torch

    if option and option != "auto":
        if option not in DTYPES:
            raise ConfigError(f"options.dtype: expected one of {', '.join(DTYPES)}")
        return getattr(torch, option)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    return torch.float32


@dataclass
class LoadedModel:
    """A model on its device, with its tokenizer: what steering and trial functions use."""

    name: str
    model: Any
    tokenizer: Any
    device: str
    dtype: Any
    served_model: str
    """The folder's absolute path, or `hub-id@commit` where the cache knows the commit."""
    eos_ids: tuple[int, ...]
    pad_id: int


def load(
    name: str, device: str | None = None, dtype: str | None = None, download: bool = False
) -> LoadedModel:
    """The model and tokenizer `name`, on `device` in `dtype` (chosen as above), eval mode."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    check_source(name, download)
    source = str(Path(name).expanduser()) if is_path(name) else name
    offline = not download  # a hub id not in the cache was refused above: no retries
    chosen = pick_device(device)
    torch_dtype = pick_dtype(chosen, dtype)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(
        source, local_files_only=offline, dtype=torch_dtype
    )
    model.to(chosen)
    model.eval()
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = eos[0] if eos else 0
    return LoadedModel(name, model, tokenizer, chosen, torch_dtype, _served(name, model), eos, pad)


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    found = getattr(model.generation_config, "eos_token_id", None)
    if found is None:
        found = tokenizer.eos_token_id
    if found is None:
        return ()
    return tuple(found) if isinstance(found, list | tuple) else (int(found),)


def _served(name: str, model: Any) -> str:
    if is_path(name):
        return str(Path(name).expanduser().resolve())
    commit = getattr(model.config, "_commit_hash", None)
    return f"{name}@{commit}" if commit else name


def free(loaded: LoadedModel | None) -> None:
    """Drop the model and empty the accelerator's cache (call with the last reference)."""
    import torch

    if loaded is not None:
        loaded.model = None
        loaded.tokenizer = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA (or MPS) out-of-memory error."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
