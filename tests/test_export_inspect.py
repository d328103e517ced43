"""`trialrun export --format inspect`: one Inspect AI eval log per cell, which Inspect's own
reader (`inspect_ai.log.read_eval_log`) opens with every sample, its scores, verdicts and
errors. Inspect AI is an optional extra, not in dev (docs/design/notes.md: ~300 MB): the
round trip skips with a reason where it is not installed; the message without it does not.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CliResult, only_run, read_results
from test_report import _config

Cli = Callable[..., CliResult]
HAS_INSPECT = importlib.util.find_spec("inspect_ai") is not None


@pytest.mark.skipif(
    not HAS_INSPECT, reason="inspect-ai not installed: pip install 'trialrun[inspect]'"
)
def test_an_inspect_log_per_cell_that_inspects_reader_opens(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    from inspect_ai.log import read_eval_log

    write_config(**_config())
    assert cli("run", "exp.yaml").code in (0, 3)
    run = only_run(tmp_path / "runs")
    records = read_results(run)
    result = cli("export", str(run), "--format", "inspect", "-o", "logs")
    assert result.code == 0, result.err
    logs = sorted((tmp_path / "logs").glob("*.eval"))
    assert len(logs) == 2 * 4  # models × grid cells
    samples = [s for path in logs for s in (read_eval_log(str(path)).samples or [])]
    assert len(samples) == len(records)
    by_trial = {s.metadata["trial_id"]: s for s in samples}
    for record in records:
        sample = by_trial[record["trial_id"]]
        assert sample.id == record["item_id"] and sample.epoch == record["repeat"] + 1
        assert sample.metadata["judge"] == record.get("judge")
        if record["status"] == "failed":
            assert sample.error is not None and record["error"] in sample.error.message
        else:
            assert sample.output.completion == record["turns"][-1]["response"]
            exact = record["scores"]["exact"]
            if exact is not None:
                assert sample.scores["exact"].value == ("C" if exact else "I")
    first = read_eval_log(str(logs[0]))
    assert first.eval.task_args and first.eval.model in ("mock/alpha", "mock/beta")


@pytest.mark.skipif(HAS_INSPECT, reason="checks the message shown without inspect-ai")
def test_without_inspect_the_export_says_what_to_install(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    write_config(**_config())
    assert cli("run", "exp.yaml").code in (0, 3)
    result = cli("export", "--format", "inspect", "-o", "logs")
    assert result.code == 2 and "pip install 'trialrun[inspect]'" in result.err
    assert cli("export", "--format", "inspect").code == 2  # no -o
