"""The reference (docs/reference.md) is generated from the code, and CI runs the README's test command."""

from __future__ import annotations

import importlib

import trialrun
from conftest import ROOT
from trialrun.reference import main as reference_main

EXPORTED = {
    "ConfigError",
    "DatasetError",
    "Experiment",
    "Observer",
    "Prepared",
    "ProviderError",
    "Run",
    "RunIncomplete",
    "TrialrunError",
    "UsageError",
    "__version__",
    "aresume",
    "arun",
    "list_runs",
    "load",
    "load_many",
    "open_run",
    "plan_summary",
    "resume",
    "run",
    "run_prepared",
    "collect",
}


def test_reference_sections_match_the_code() -> None:
    assert reference_main(["--check", str(ROOT / "docs" / "reference.md")]) == 0


def test_stale_reference_is_detected(tmp_path) -> None:
    stale = (ROOT / "docs" / "reference.md").read_text().replace("| `repeats` |", "| `repeat` |")
    path = tmp_path / "reference.md"
    path.write_text(stale)
    assert reference_main(["--check", str(path)]) == 1


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make demo" in readme


def test_public_surface_is_exactly_the_documented_names() -> None:
    assert set(trialrun.__all__) == EXPORTED
    module = importlib.import_module("trialrun")
    for name in trialrun.__all__:
        assert getattr(module, name) is not None
