"""Shared fixtures: an isolated cache and working folder, config writing, and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from trialrun.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cwd and response cache; nothing touches the user's folders."""
    monkeypatch.setenv("TRIALRUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def base_config(**changes: Any) -> dict[str, Any]:
    """A small valid config: 4 inline items × 2 mock models × 2 temperatures, 1 follow-up."""
    config: dict[str, Any] = {
        "name": "t",
        "seed": 7,
        "dataset": {
            "items": [
                {"id": f"q{i}", "prompt": f"Is claim {i} true?", "category": "c" + str(i % 2)}
                for i in range(4)
            ]
        },
        "models": [{"model": "mock/alpha"}, {"model": "mock/beta"}],
        "grid": {"temperature": [0.0, 0.7]},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "{{ item.prompt }}"},
        ],
        "followups": ["Sure? ({{ item.category }})"],
        "params": {"max_tokens": 32},
    }
    config.update(changes)
    return config


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """write_config(name="exp.yaml", **changes) → path of a YAML config built on base_config."""

    def write(name: str = "exp.yaml", **changes: Any) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(base_config(**changes), sort_keys=False))
        return path

    return write


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """cli("run", "exp.yaml", ...) runs the CLI in-process and returns code, stdout, stderr."""

    def invoke(*args: str) -> CliResult:
        code = run_cli(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


def trialrun_subprocess(*args: str, cwd: Path, **kwargs: Any) -> subprocess.Popen[str]:
    """Start a real `trialrun` process (python -m trialrun) with the test's environment."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "trialrun", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def read_results(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def only_run(runs_dir: Path) -> Path:
    """The single run folder under runs_dir (fails if there is not exactly one)."""
    found = [p for p in runs_dir.iterdir() if not p.name.startswith(".")]
    assert len(found) == 1, found
    return found[0]
