"""Checks a researcher wants before a long run: Python, packages, the local extra and GPUs,
disk, cache, keys, and a config's dataset (found, parsed, its item count)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trialrun import providers, secrets
from trialrun.config import DatasetConfig
from trialrun.config_yaml import read_yaml
from trialrun.dataset import load_dataset
from trialrun.env_refs import env_references, resolve_env
from trialrun.errors import TrialrunError
from trialrun.executor.cache import cache_dir
from trialrun.provenance import PACKAGES, gpu_info, versions
from trialrun.providers import registry

MIN_FREE_BYTES = 1 << 30
LOCAL_PACKAGES = ("torch", "transformers", "tokenizers", "huggingface-hub")
"""The `local` extra (hf/ models) and the torch it expects installed first."""
LOCAL_INSTALL = (
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu "
    "(or your machine's build), then pip install 'trialrun[local]'"
)
PING_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def environment_checks(runs_dir: Path = Path("runs")) -> list[Check]:
    checks = [Check("python", sys.version_info >= (3, 11), sys.version.split()[0])]
    for name, version in versions(PACKAGES).items():
        checks.append(Check(f"package {name}", version is not None, version or "not installed"))
    sdks = registry.sdk_packages()
    for name, version in versions(tuple(sdks)).items():
        extra = sdks[name]
        checks.append(
            Check(
                f"package {name}",
                True,
                version or f"not installed (for {extra}/ models: pip install 'trialrun[{extra}]')",
            )
        )
    checks.append(local_extra_check())
    ray = versions(("ray",))["ray"]
    checks.append(
        Check(
            "package ray",
            True,
            ray or "not installed (for executor.ray: pip install 'trialrun[ray]')",
        )
    )
    checks += gpu_checks()
    probe = runs_dir if runs_dir.exists() else Path.cwd()
    free = shutil.disk_usage(probe).free
    checks.append(Check("disk", free >= MIN_FREE_BYTES, f"{free / 1e9:.1f} GB free at {probe}"))
    folder = cache_dir(None)
    checks.append(Check("cache", _writable(folder), str(folder)))
    return checks


def local_extra_check() -> Check:
    """Whether hf/ models can run here: the local extra's packages and their versions. Not a
    failure when absent: the extra is optional."""
    found = versions(LOCAL_PACKAGES)
    listed = ", ".join(f"{name} {version}" for name, version in found.items() if version)
    missing = [name for name, version in found.items() if version is None]
    if not missing:
        return Check("local extra", True, f"installed: {listed}")
    detail = f"not installed (missing {', '.join(missing)}; for hf/ models: {LOCAL_INSTALL})"
    return Check("local extra", True, detail)


def gpu_checks() -> list[Check]:
    """One line per GPU (name, memory, driver): nvidia-smi when it is on the PATH, else
    torch.cuda when torch is installed (imported here, on demand: seconds)."""
    gpus = gpu_info()
    has_torch = importlib.util.find_spec("torch") is not None
    if gpus is None and has_torch:
        with contextlib.suppress(Exception):  # a broken torch: no GPU line, never a crash
            importlib.import_module("torch")
        gpus = gpu_info()
    if not gpus:
        smi = "nvidia-smi lists none" if shutil.which("nvidia-smi") else "no nvidia-smi on the PATH"
        cuda = "torch.cuda sees none" if has_torch else "torch not installed"
        return [Check("gpu", True, f"none found ({smi}; {cuda})")]
    return [Check(f"gpu {i}", True, _describe_gpu(gpu)) for i, gpu in enumerate(gpus)]


def _describe_gpu(gpu: dict[str, Any]) -> str:
    memory = gpu.get("memory_mib")
    parts = [str(gpu.get("name") or "unknown")]
    parts.append(f"{memory / 1024:.1f} GiB" if memory else "memory unknown")
    parts.append(f"driver {gpu['driver']}" if gpu.get("driver") else "driver unknown")
    if gpu.get("cuda"):
        parts.append(f"CUDA {gpu['cuda']}")
    return ", ".join(parts)


def config_checks(config: Path, *, ping: bool = True) -> list[Check]:
    """Per provider in a config: known, key set (never shown), endpoint answering."""
    raw = read_yaml(config)
    checks = []
    for name in sorted(env_references(raw)):
        present = bool(os.environ.get(name))
        checks.append(
            Check(f"env {name}", present, "set" if present else "not set: export it before running")
        )
    checks.append(dataset_check(raw, config))
    entries = [m for m in raw.get("models") or [] if isinstance(m, dict)]
    seen: set[tuple[str, str, str]] = set()
    for entry in entries:
        endpoint = (
            str(entry.get("model", "")).split("/", 1)[0],
            str(entry.get("base_url")),
            str(entry.get("api_key")),
        )
        if endpoint not in seen:
            seen.add(endpoint)
            checks += _provider_checks(entry, ping)
    return checks


def dataset_check(raw: dict[str, Any], config: Path) -> Check:
    """The config's dataset found, read and checked as a run reads it (ids, limit, sample;
    not the templates' fields), with its item count."""
    try:
        cfg = DatasetConfig.model_validate(raw.get("dataset"))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in ("dataset", *error["loc"]))
        return Check("dataset", False, f"{where}: {error['msg']}")
    try:
        dataset = load_dataset(cfg, config.resolve().parent, str(config))
    except TrialrunError as exc:
        return Check("dataset", False, str(exc))
    where = cfg.path if cfg.path is not None else "dataset.items"
    return Check("dataset", True, f"{where}: {len(dataset):,} items")


def _provider_checks(entry: dict[str, Any], ping: bool) -> list[Check]:
    model = str(entry.get("model", ""))
    name = model.split("/", 1)[0]
    if registry.provider_class(name) is None:
        return [
            Check(
                f"provider {name}",
                False,
                f"unknown (available: {', '.join(providers.available())})",
            )
        ]
    checks = [Check(f"provider {name}", True, "registered")]
    env_keys = registry.env_keys(name)
    if env_keys and not entry.get("api_key") and not entry.get("base_url"):
        present = [key for key in env_keys if os.environ.get(key)]
        checks.append(
            Check(
                f"key {name}",
                bool(present),
                f"{present[0]} set" if present else f"not set: export {' or '.join(env_keys)}",
            )
        )
    if ping:
        checks.append(_ping(name, entry, model))
    return checks


def _ping(name: str, entry: dict[str, Any], model: str) -> Check:
    where = entry.get("base_url") or "default endpoint"
    try:
        api_key = resolve_env(entry.get("api_key"), f"{model}.api_key")
        secrets.remember(api_key)
        secrets.remember_env(registry.env_keys(name))
        settings = {
            "api_key": api_key,
            "base_url": resolve_env(entry.get("base_url"), f"{model}.base_url"),
        }
        provider = providers.create(name, **settings) if name != "mock" else None
        note = asyncio.run(_ask(provider)) if provider else "offline mock provider"
    except Exception as exc:  # any failure is the answer: report it, never raise
        text = secrets.redact(str(exc))
        message = text.splitlines()[0][:160] if text else type(exc).__name__
        return Check(f"endpoint {name}", False, f"{where}: {message}")
    return Check(f"endpoint {name}", True, f"{where}: {note}")


async def _ask(provider: providers.Provider) -> str:
    try:
        return await asyncio.wait_for(provider.ping(), PING_TIMEOUT_S)
    finally:
        await provider.aclose()


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".doctor"
        probe.write_text("ok")
        probe.unlink()
        return True
    except OSError:
        return False
