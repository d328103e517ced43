"""`trialrun plan` and loading: tokens and cost, warnings, huge plans, `--show`, plans without
keys, and `--mock` dry runs that refuse and warn as the real run would."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import trialrun
from conftest import CliResult, base_config, only_run
from trialrun import loading
from trialrun.cli import preparing
from trialrun.testing import FakeServer

SECRET = "sk-ant-test-4b7d0e-do-not-print"
HAIKU = "anthropic/claude-haiku-4-5"

Cli = Callable[..., CliResult]


def write(tmp_path: Path, **changes: Any) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(base_config(**changes), sort_keys=False))
    return str(path)


def estimate_rows(out: str) -> dict[str, list[str]]:
    """The estimate table's body rows by model (its box draws no vertical bars)."""
    lines = out.split("estimate", 1)[1].splitlines()
    rows = {}
    for line in lines:
        cells = [cell.strip() for cell in line.strip().split("  ") if cell.strip()]
        if len(cells) == 6 or cells[:1] == ["total"]:
            rows[cells[0].strip()] = [cell.strip() for cell in cells[1:]]
    return rows


# ------------------------------------------------------------------ cost (14)


def test_plan_estimates_tokens_and_cost_per_model_at_both_prices(tmp_path: Path, cli: Cli) -> None:
    models = [{"model": HAIKU}, {"model": "mock/alpha"}, {"model": "anthropic/claude-nova-9"}]
    config = write(tmp_path, models=models, grid={}, repeats=1000)
    result = cli("plan", config)
    assert result.code == 0, result.err
    rows = estimate_rows(result.out)
    # Per trial, at ~4 characters a token + 4 a message: "Be brief." 6 + "Is claim i true?" 8;
    # turn 2 adds that 14, a 32-token answer + 4 and "Sure? (ci)" 6: 70 in, 2 x 32 out.
    # 4 items x 1,000 repeats: 8,000 requests, 280,000 in, 256,000 out (an upper bound).
    assert rows[HAIKU] == ["8,000", "280,000", "256,000", "$1.56", "$0.78"]
    assert rows["mock/alpha"][-2:] == ["$0 (mock)", "$0 (mock)"]
    assert rows["anthropic/claude-nova-9"][-2:] == ["no price", "no price"]
    assert rows["total"] == ["$1.56 + unpriced", "$0.78 + unpriced"]
    assert "no price known for anthropic/claude-nova-9" in result.out
    assert "output is max_tokens per request, an upper bound" in result.out
    assert "all 4 items rendered" in result.out


def test_plan_prices_from_the_config_and_scales_a_sample_of_items(tmp_path: Path, cli: Cli) -> None:
    items = [{"id": f"q{i}", "prompt": "x" * 40, "category": "c0"} for i in range(1000)]
    prices = {"anthropic/claude-nova-9": {"input": 10.0, "output": 0.0, "batch_discount": 0.25}}
    config = write(
        tmp_path,
        dataset={"items": items},
        models=[{"model": "anthropic/claude-nova-9"}],
        grid={},
        followups=[],
        prices=prices,
    )
    result = cli("plan", config)
    assert result.code == 0, result.err
    # 6 + (40 // 4 + 4) = 20 input tokens a request, 1,000 requests: $0.20, less 25% in batch.
    assert estimate_rows(result.out)["anthropic/claude-nova-9"] == [
        "1,000",
        "20,000",
        "32,000",
        "$0.20",
        "$0.15",
    ]
    assert "200 of 1,000 items rendered, scaled up" in result.out


def test_plan_warns_when_a_grid_key_never_reaches_a_model(tmp_path: Path, cli: Cli) -> None:
    grid = {"temperature": [0.0, 0.5, 1.0], "style": ["terse", "plain"]}
    messages = [{"role": "user", "content": "{{ style }}: {{ item.prompt }}"}]
    models = [{"model": HAIKU}, {"model": "mock/alpha"}]
    result = cli("plan", write(tmp_path, models=models, grid=grid, messages=messages))
    assert result.code == 0, result.err
    assert f"warning: {HAIKU} cannot take temperature" in result.err
    assert (
        f"warning: {HAIKU}: grid temperature never reaches the model, so its 6 cells send "
        "the requests of 2 (4 collapse into others" in result.err
    )
    assert "mock/alpha: grid" not in result.err  # the mock takes temperature


def test_a_grid_key_the_templates_read_is_no_collapse(tmp_path: Path, cli: Cli) -> None:
    messages = [{"role": "user", "content": "At {{ temperature }}: {{ item.prompt }}"}]
    result = cli("plan", write(tmp_path, models=[{"model": HAIKU}], messages=messages))
    assert result.code == 0, result.err
    assert "cannot take temperature" in result.err
    assert "never reaches the model" not in result.err


def test_plan_prints_config_warnings_instead_of_refusing(tmp_path: Path, cli: Cli) -> None:
    result = cli("plan", write(tmp_path, limits={"openai": {"rpm": 10}}))
    assert result.code == 0, result.err
    assert "warning: limits.openai: no model uses provider 'openai'" in result.err


# ------------------------------------------------------------------ huge plans (16)


def test_plan_of_a_ten_million_cell_grid_counts_without_building_it(
    tmp_path: Path, cli: Cli
) -> None:
    grid = {name: list(range(10)) for name in "abcdefg"}
    text = "".join(f"{{{{ {name} }}}}" for name in grid)
    messages = [{"role": "user", "content": f"{text} {{{{ item.prompt }}}}"}]
    config = write(tmp_path, models=[{"model": "mock/alpha"}], grid=grid, messages=messages)
    started = time.monotonic()
    result = cli("plan", config, "dataset.limit=1")
    assert result.code == 0, result.err
    assert time.monotonic() - started < 10  # it took 35 s and 2.8 GB when cells were a list
    assert "10,000,000" in result.out
    assert "warning: t: 10,000,000 trials; writing the plan takes about 1.5 GB" in result.err


def test_run_of_a_huge_plan_warns_and_shows_it_being_written(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loading, "HUGE_PLAN", 10)
    monkeypatch.setattr(loading, "PROGRESS_EVERY", 4)
    monkeypatch.setattr(preparing, "SHOW_PROGRESS_FROM", 10)
    result = cli("run", write(tmp_path))
    assert result.code == 0, result.err
    assert "warning: t: 16 trials; writing the plan takes about" in result.err
    assert "writing t: 16 trials..." in result.err
    assert "writing t: 16 trials in" in result.err
    assert "16 done, 0 failed" in result.out


def test_plan_with_a_shard_counts_each_model_in_bounded_memory(tmp_path: Path) -> None:
    prepared = trialrun.load(write(tmp_path, repeats=500), shard="1/3")
    by_model = prepared.trials_by_model()
    planned = list(prepared.trials())
    assert sum(by_model.values()) == len(planned) == prepared.trial_count
    assert by_model["mock/alpha"] == sum(1 for t in planned if t.model == "mock/alpha")


# ------------------------------------------------------------------ plan --show (19)


def test_plan_show_prints_the_first_requests_as_they_would_be_sent(
    tmp_path: Path, cli: Cli
) -> None:
    config = write(tmp_path, models=[{"model": HAIKU}, {"model": "mock/alpha"}])
    result = cli("plan", config, "--show", "3")
    assert result.code == 0, result.err
    shown = result.out.split("request 1:", 1)[1]
    assert shown.count("[system] Be brief.") == 3
    assert "[user] Is claim 0 true?" in shown and "request 4:" not in shown
    # Anthropic's Messages API takes no temperature: the params as sent leave it out.
    assert '"max_tokens": 32' in shown and "temperature" not in shown.split("params:")[1][:60]
    assert "request 3: mock/alpha (temperature=0.0, repeat 0)" in shown
    assert '"temperature": 0.0' in shown.split("request 3:")[1]
    assert "turn 2 [user] template (rendered with the answers before it): Sure? (" in shown


# ------------------------------------------------------------------ keys (18.1)


def test_plan_needs_no_key_and_names_the_ones_a_run_needs(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LITELLM_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    models = [
        {"model": "openai/gpt-4o-mini", "api_key": "${env:LITELLM_KEY}"},
        {"model": HAIKU},
    ]
    config = write(tmp_path, models=models)
    result = cli("plan", config)
    assert result.code == 0, result.err
    assert "keys a real run needs: ANTHROPIC_API_KEY (set), LITELLM_KEY (NOT SET)" in result.out
    assert SECRET not in result.out + result.err

    ran = cli("run", config)
    assert ran.code == 2
    assert "environment variable LITELLM_KEY is not set" in ran.err
    assert not Path("runs").exists()


# ------------------------------------------------------------------ --mock (13)


def test_mock_still_refuses_an_unknown_provider(tmp_path: Path, cli: Cli) -> None:
    result = cli("run", write(tmp_path, models=[{"model": "opanai/gpt-4o"}]), "--mock")
    assert result.code == 2
    assert "unknown provider 'opanai'" in result.err
    assert not Path("runs").exists()


def test_mock_still_refuses_batch_mode_where_the_provider_has_no_batch_api(
    tmp_path: Path, cli: Cli
) -> None:
    config = write(tmp_path, models=[{"model": "hf/tiny-model"}], mode="batch")
    result = cli("run", config, "--mock")
    assert result.code == 2
    assert "no batch API for provider 'hf'" in result.err


def test_mock_dry_run_warns_as_the_real_run_would(tmp_path: Path, cli: Cli) -> None:
    result = cli("run", write(tmp_path, models=[{"model": HAIKU}]), "--mock")
    assert result.code == 0, result.err
    assert f"warning: {HAIKU} cannot take temperature" in result.err
    assert f"warning: {HAIKU}: grid temperature never reaches the model" in result.err


def test_mock_dry_run_uses_the_mocks_limits_not_the_real_ones(tmp_path: Path, cli: Cli) -> None:
    # 16 requests at rpm 30 would take 30 s; the mock answers them at once.
    config = write(
        tmp_path, models=[{"model": "openai/gpt-4o-mini"}], limits={"openai": {"rpm": 30}}
    )
    started = time.monotonic()
    result = cli("run", config, "--mock")
    assert result.code == 0, result.err
    assert time.monotonic() - started < 10
    assert "warning: --mock: limits.openai (rpm 30) not applied; the mock's own" in result.err
    assert "8 done, 0 failed" in result.out


def test_a_real_run_prints_the_params_warning_once(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", SECRET)
    with FakeServer("anthropic", api_key=SECRET) as fake:
        entry = {"model": HAIKU, "base_url": fake.url, "api_key": "${env:FAKE_API_KEY}"}
        result = cli("run", write(tmp_path, models=[entry]))
    assert result.code == 0, result.err
    assert result.err.count("cannot take temperature") == 1
    assert "never reaches the model" in result.err
    assert only_run(Path("runs"))


def test_plan_says_how_long_in_real_time_and_in_batch_mode(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """A 10-turn protocol at 60 rpm: 100 trials x 10 requests take 1,000 s of rpm in real
    time, against 10 batch stages (about 10 h, up to 10 days)."""
    config = base_config(
        models=[{"model": "openai/gpt-4o-mini"}],
        dataset={"items": [{"id": "a", "prompt": "x", "category": "c"}]},
        grid={},
        repeats=100,
        followups=[f"again {k}" for k in range(9)],
        limits={"openai": {"rpm": 60}},
    )
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(config))
    out = cli("plan", "long.yaml").out
    line = next(line for line in out.splitlines() if line.startswith("duration:"))
    assert "about 17 min in real time (bound by rpm on openai" in line
    assert "10 stages x ~1 h typical = ~10.0 h (up to 10.0 days" in line
    slow = cli("plan", "long.yaml", "--latency", "100").out
    assert "bound by concurrency x latency" in slow  # 1,000 x 100 s / 64 > 1,000 s


def test_plan_prices_local_models_in_gpu_hours(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """A local model costs GPU time, not API money: trials x the stated seconds a trial,
    at the table's rough price or the user's; no batch mode for it."""
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text("{}")
    config = base_config(
        models=[{"model": f"hf/{tmp_path / 'tiny'}"}],
        dataset={"items": [{"id": "a", "prompt": "x", "category": "c"}]},
        grid={},
        repeats=100,
        followups=[],
    )
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(config))
    out = cli("plan", "local.yaml").out
    assert "GPU time: 100 local trials; give --gpu-s-per-trial" in out
    assert "batch mode: not for local models" in out and "no price" not in out
    priced = cli("plan", "local.yaml", "--gpu-s-per-trial", "36", "--gpu", "a100").out
    assert "100 local trials x 36 s = 1.00 GPU h, $1.30 at $1.3/h on A100" in priced
    own = cli("plan", "local.yaml", "--gpu-s-per-trial", "36", "--gpu", "L4", "--gpu-price", "0.5")
    assert "1.00 GPU h, $0.50 at $0.5/h on L4" in own.out
    assert (
        "no price for L4" in cli("plan", "local.yaml", "--gpu-s-per-trial", "36", "--gpu", "L4").out
    )
