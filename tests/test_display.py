"""What people see: outside text shown literally, unknown costs never shown as $0, the summary
table never cutting text off and counting cache hits, and what a batch-mode run says it did."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

import trialrun
from conftest import CliResult, base_config, only_run
from test_cli import table_rows
from trialrun.display import ProgressObserver, print_summary
from trialrun.testing import FakeServer

NASTY = "[/] [redacted] [bold]x \x1b[31m"
"""Outside text that rich would read as markup (a stray closing tag crashes it; a known tag
vanishes) and an ANSI escape that would turn the terminal red."""
KEY = "sk-display-test-0123456789"

Cli = Callable[..., CliResult]


def assert_literal(out: str) -> None:
    """NASTY is on screen as written, its escape spelled out rather than sent."""
    for part in ("[/]", "[redacted]", "[bold]x", "\\x1b[31m"):
        assert part in out, out
    assert "\x1b" not in out


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    with FakeServer("openai", api_key=KEY) as fake:
        yield fake


def fake_model(server: FakeServer, name: str = "openai/unpriced-model") -> dict[str, Any]:
    return {"model": name, "base_url": server.url, "api_key": "${env:FAKE_API_KEY}"}


def write(config: dict[str, Any], name: str = "exp.yaml") -> str:
    Path(name).write_text(yaml.safe_dump(config, sort_keys=False))
    return name


# ------------------------------------------------------------------ outside text


def test_status_shows_markup_and_escapes_in_event_details_literally_every_time(cli: Cli) -> None:
    assert cli("run", write(base_config()), "--limit", "2").code == 0
    run = trialrun.api.open_run(only_run(Path("runs")))
    store = run.store(readonly=False)  # as the executor records a server's error message
    store.add_event("lane_stopped", f"openai: 400 {NASTY}")
    store.flush()
    store.close()
    for _ in range(2):
        result = cli("status", str(run.path))
        assert result.code == 0, result.err
        assert_literal(result.out)


def test_summary_table_shows_model_names_and_cell_values_literally(cli: Cli) -> None:
    config = base_config(
        models=[{"model": "mock/alpha", "name": f"mock/{NASTY}"}],
        grid={"style": [NASTY]},
        messages=[{"role": "user", "content": "{{ item.prompt }} {{ style }}"}],
    )
    result = cli("run", write(config))
    assert result.code == 0, result.err
    assert_literal(result.out)
    assert f"mock/{NASTY}".replace("\x1b", "\\x1b") in result.out


def test_doctor_shows_markup_and_escapes_from_the_config_literally(cli: Cli) -> None:
    models = [
        {"model": "openai/m", "base_url": f"http://127.0.0.1:9/{NASTY}", "api_key": KEY},
        {"model": "[bold]x[redacted]\x1b[31m/m"},
    ]
    config = write(base_config(models=models))
    for _ in range(2):
        result = cli("doctor", config)
        assert result.code == 1, result.err
        assert_literal(result.out)
        assert "provider [bold]x[redacted]\\x1b[31m: unknown" in result.out


def test_first_error_of_an_all_failed_run_is_shown_literally(cli: Cli) -> None:
    config = base_config(models=[{"model": "mock/alpha", "options": {"fail": "final"}}])
    assert cli("run", write(config)).code == 1
    run_dir = only_run(Path("runs"))
    conn = sqlite3.connect(run_dir / "trialrun.db")  # as if the server had said NASTY
    conn.execute("UPDATE records SET record = json_set(record, '$.error', ?)", (NASTY,))
    conn.commit()
    conn.close()
    result = cli("resume", str(run_dir))
    assert result.code == 1
    assert "first error: " in result.err
    assert_literal(result.err)


# ------------------------------------------------------------------ unknown costs


def test_an_unpriced_model_costs_unknown_in_summary_and_status_not_zero(
    server: FakeServer, cli: Cli
) -> None:
    data = {"items": [{"id": f"q{i}", "prompt": f"Claim {i}?", "category": "c"} for i in range(3)]}
    data["items"].append({"id": "bad", "prompt": "[[status:400]] no", "category": "c"})  # fails
    config = base_config(
        dataset=data, models=[{"model": "mock/alpha"}, fake_model(server)], retry={"attempts": 1}
    )
    result = cli("run", write(config))
    assert result.code == 3, result.err  # some trials failed
    rows = {row[0]: row for row in table_rows(result.out) if row[0].startswith("openai")}
    assert rows and all("unknown" in row[6] for row in rows.values()), result.out
    status = cli("status", str(only_run(Path("runs"))))
    line = next(x for x in status.out.splitlines() if x.startswith("calls"))
    assert "unknown" in line.split("cost", 1)[1], status.out


# ------------------------------------------------------------------ the table


def test_summary_at_80_columns_keeps_long_model_names_and_cells_whole(cli: Cli) -> None:
    model = "mock/a-very-long-model-name-that-somebody-fine-tuned-on-their-own-data-v2"
    values = ["first-long-option-value-for-this-grid-axis", "second-long-option-value-too"]
    config = base_config(
        models=[{"model": "mock/alpha", "name": model}],
        grid={"temperature": [0.0], "style": values},
        messages=[{"role": "user", "content": "{{ item.prompt }} {{ style }}"}],
    )
    assert cli("run", write(config)).code == 0
    out = io.StringIO()
    print_summary(trialrun.api.open_run(only_run(Path("runs"))), Console(file=out, width=80))
    text = out.getvalue()
    assert "…" not in text, text
    assert text.count(model) == 2, text
    for value in values:
        assert f"style={value}" in text, text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_summary_table_counts_turns_answered_from_the_cache(cli: Cli) -> None:
    config = write(base_config())
    first = cli("run", config)
    second = cli("run", config)
    assert first.code == second.code == 0
    header = next(line for line in second.out.splitlines() if "cache hits" in line)
    assert [c.strip() for c in header.strip("┃ \n").split("┃")][-1] == "cache hits"
    assert [row[-1] for row in table_rows(first.out)] == ["0"] * 4
    assert [row[-1] for row in table_rows(second.out)] == ["8"] * 4  # 4 items x 2 turns
    assert [row[5] for row in table_rows(second.out)] == ["0.000 s"] * 4


# ------------------------------------------------------------------ batch mode


class UploadFails(FakeServer):
    """The fake OpenAI server, answering 500 to every batch input file upload."""

    async def _file_upload(self, http: Any) -> Any:
        return self._error(500, f"upload failed: {NASTY}")


def test_batch_run_whose_submissions_all_failed_says_none_was_submitted(
    monkeypatch: pytest.MonkeyPatch, cli: Cli
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    with UploadFails("openai", api_key=KEY) as server:
        config = base_config(mode="batch", grid={}, models=[fake_model(server)])
        result = cli("run", write(config))
    assert result.code == 0, result.err
    assert "out; results come within 24 h" not in result.out
    assert "no batch was submitted (last error: openai: submitting 4 requests" in result.out
    assert_literal(result.out)  # the server's message, in the summary
    assert_literal(result.err)  # and in the pass's warning
    assert "warning: openai: submitting 4 requests failed" in result.err


def test_batch_run_says_how_many_batches_are_out(cli: Cli) -> None:
    result = cli("run", write(base_config(mode="batch")))
    assert result.code == 0, result.err
    assert "1 batch out (16 requests); results come within 24 h" in result.out


def test_batch_run_whose_submission_got_no_answer_says_none_is_confirmed(
    isolated: Path, cli: Cli
) -> None:
    # The mock keeps its batches under the cache folder: a file in the way fails the
    # submission with no answer, as a dropped connection would.
    (isolated / "cache").mkdir()
    (isolated / "cache" / "mock-batches").write_text("in the way")
    result = cli("run", write(base_config(mode="batch")))
    assert result.code == 0, result.err
    assert "out; results come within 24 h" not in result.out
    assert "no batch is confirmed submitted: 1 submission got no answer" in result.out


def test_the_progress_line_says_when_a_lane_waits_out_a_retry_after() -> None:
    run = trialrun.api.create_run(trialrun.load(base_config()))
    observer = ProgressObserver(Console(file=io.StringIO(), width=200))
    observer.started(run, 16, 0)
    observer.waiting(run, "openai", 120.0, "openai: server asked to wait")
    task = observer.progress.tasks[0]
    assert "openai paused until" in task.fields["note"] and "Retry-After" in task.fields["note"]
    observer.waiting(run, "openai", 0.0, "openai: server asked to wait")
    observer.committed(run, 1, 0)  # the wait is over: the note goes
    assert observer.progress.tasks[0].fields["note"] == ""
    observer.finished()
