"""What `run`, `resume` and `collect` return, so scripts and job arrays can tell outcomes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import CliResult


def test_a_run_whose_every_trial_failed_exits_1_and_says_why(
    write_config: Callable[..., Path], cli: Callable[..., CliResult]
) -> None:
    models = [{"model": "mock/alpha", "options": {"fail": "final"}}]
    result = cli("run", str(write_config(models=models)), "--quiet")
    assert result.code == 1
    assert "0 done, 8 failed" in result.out
    assert "every trial of" in result.err and "400 bad request" in result.err
    assert cli("resume", "--quiet").code == 1


def test_a_run_with_some_failed_trials_exits_3(
    write_config: Callable[..., Path], cli: Callable[..., CliResult]
) -> None:
    items = [{"id": "a", "prompt": "fine"}, {"id": "b", "prompt": "[[mock:refuse]] no"}]
    result = cli("run", str(write_config(dataset={"items": items}, followups=[])), "--quiet")
    assert result.code == 3, result.err
    assert "4 done, 4 failed" in result.out


def test_a_run_whose_every_trial_is_done_exits_0(
    write_config: Callable[..., Path], cli: Callable[..., CliResult]
) -> None:
    assert cli("run", str(write_config()), "--quiet").code == 0


def test_a_batch_run_with_batches_still_out_exits_0(
    write_config: Callable[..., Path], cli: Callable[..., CliResult]
) -> None:
    result = cli("run", str(write_config(mode="batch", mock={"batch_delay_s": 60})), "--quiet")
    assert result.code == 0, result.err
