"""doctor's GPU and local-extra lines: GPUs from a fake nvidia-smi on the PATH or torch.cuda,
the local extra's packages with their versions, and what to install when one is missing."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import stat
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

SMI_OUTPUT = "NVIDIA H200, 143771, 550.54.15\nNVIDIA A10G, 23028, 550.54.15\n"


def _fake_nvidia_smi(folder: Path, output: str) -> None:
    """An `nvidia-smi` that prints what the real one prints for doctor's query."""
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'END'\n{output}END\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_doctor_lists_each_gpu_nvidia_smi_reports(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path / "bin", SMI_OUTPUT)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")

    result = cli("doctor")

    assert result.code == 0, result.out
    assert "gpu 0: NVIDIA H200, 140.4 GiB, driver 550.54.15" in result.out
    assert "gpu 1: NVIDIA A10G, 22.5 GiB, driver 550.54.15" in result.out


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_doctor_says_no_gpu_and_what_it_asked_on_a_cpu_machine(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no nvidia-smi

    result = cli("doctor")

    assert result.code == 0, result.out
    assert "gpu: none found (no nvidia-smi on the PATH; torch.cuda sees none)" in result.out


def test_doctor_reports_the_local_extra_with_versions(cli) -> None:
    result = cli("doctor")

    text = " ".join(result.out.split())  # the console wraps long lines
    installed: dict[str, str] = {}
    for name in ("torch", "transformers", "tokenizers", "huggingface-hub"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            installed[name] = metadata.version(name)
    if len(installed) == 4:
        assert "ok local extra: installed: torch " in text
    else:
        assert "local extra: not installed" in text and "pip install 'trialrun[local]'" in text
    for name, version in installed.items():
        assert f"{name} {version}" in text


def test_doctor_says_how_to_install_the_local_extra_when_torch_is_missing(
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_version = metadata.version

    def version(name: str) -> str:
        if name == "torch":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", version)  # as if torch were not installed

    result = cli("doctor")

    assert result.code == 0, result.out  # the extra is optional: not a failure
    text = " ".join(result.out.split())
    assert "ok local extra: not installed (missing torch;" in text
    assert "pip install torch==2.13.0" in text and "pip install 'trialrun[local]'" in text


def test_importing_trialrun_and_its_doctor_does_not_import_torch() -> None:
    code = "import sys, trialrun, trialrun.doctor, trialrun.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
