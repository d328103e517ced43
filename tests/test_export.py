"""`trialrun export`: files written whole or not at all, and every CSV column documented.

The CSV's columns come from one table in `trialrun.export`; these tests check a real
export against it (and the README section generated from it), then each column's
values against the records, the fake OpenAI server's answers and the run's overrides.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import trialrun
from conftest import base_config, only_run, read_results, trialrun_subprocess
from test_providers_http import KEY, generate_requests, sweep
from trialrun.export import CSV_COLUMNS, CSV_PATTERN_COLUMNS, csv_row
from trialrun.reference import csv_columns
from trialrun.testing import FakeServer


def export_csv(cli: Any, run_dir: Path) -> list[dict[str, str]]:
    result = cli("export", str(run_dir), "--format", "csv")
    assert result.code == 0, result.err
    return list(csv.DictReader(io.StringIO(result.out)))


def documented(column: str) -> bool:
    """True if `column` is a fixed column or matches a `prefix.<name>` pattern column."""
    if column in CSV_COLUMNS:
        return True
    patterns = [re.escape(p).replace("<N>", r"\d+") for p in CSV_PATTERN_COLUMNS]
    patterns = [re.sub(r"<[a-z]+>", ".+", p) for p in patterns]
    return any(re.fullmatch(p, column) for p in patterns)


# ------------------------------------------------------------------ columns and their docs


def test_every_csv_column_is_documented_and_in_the_readme_section(write_config, cli) -> None:
    assert cli("run", str(write_config())).code == 0
    header = next(csv.reader(io.StringIO(cli("export", "--format", "csv").out)))
    assert header[: len(CSV_COLUMNS)] == list(CSV_COLUMNS)
    assert set(CSV_COLUMNS) <= set(csv_row(read_results(only_run(Path("runs")))[0]))
    assert [c for c in header if not documented(c)] == []
    assert {"grid.temperature", "params.max_tokens", "item.category"} <= set(header)
    assert {"turn1.response", "turn1.finish_reason", "turn1.request_id"} <= set(header)
    section = csv_columns()
    for column in [*CSV_COLUMNS, *CSV_PATTERN_COLUMNS]:
        assert f"| `{column}` |" in section


def test_csv_holds_run_id_and_sent_params_so_multirun_variants_differ(write_config, cli) -> None:
    config = write_config(grid={"temperature": [0.0]})
    assert cli("run", str(config), "params.max_tokens=16,64", "--multirun").code == 0
    seen: dict[str, set[str]] = {}
    for run_dir in sorted(Path("runs").iterdir()):
        records = {r["trial_id"]: r for r in read_results(run_dir)}
        for row in export_csv(cli, run_dir):
            record = records[row["trial_id"]]
            assert row["run_id"] == run_dir.name == record["run_id"]
            assert row["params.max_tokens"] == str(record["params"]["max_tokens"])
            assert row["params.seed"] == str(record["seed"])
            assert float(row["params.temperature"]) == 0.0
            seen.setdefault(row["trial_id"], set()).add(row["params.max_tokens"])
    assert len(seen) == 8
    assert all(values == {"16", "64"} for values in seen.values())


def test_csv_turn_columns_match_what_the_openai_server_sent(
    monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    with FakeServer("openai", api_key=KEY) as server:
        run = trialrun.run(sweep(server, n=3))
        sent = {r["response"]["id"]: r["response"] for r in generate_requests(server)}
    rows = export_csv(cli, run.path)
    assert len(rows) == 6
    for row in rows:
        for prefix in ("turn1.", ""):
            answer = sent[row[f"{prefix}request_id"]]
            assert row[f"{prefix}finish_reason"] == answer["choices"][0]["finish_reason"]
            assert row[f"{prefix}served_model"] == answer["model"] == "fake-model"
            assert row[f"{prefix}response"] == answer["choices"][0]["message"]["content"]
        assert row["request_id"] != row["turn1.request_id"]


# ------------------------------------------------------------------ unknown cost


def test_unknown_cost_is_empty_never_zero(monkeypatch: pytest.MonkeyPatch, cli) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    with FakeServer("openai", api_key=KEY) as server:
        config = sweep(server, n=2)
        unpriced = {**config["models"][0], "model": "openai/unpriced-model"}
        config["models"].append(unpriced)
        broken = {"id": "broken", "prompt": "[[status:400]] refused", "category": "c0"}
        config["dataset"]["items"].append(broken)
        assert trialrun.run(config).counts()["failed"] == 4  # the broken item's trials
    rows = export_csv(cli, only_run(Path("runs")))
    cost = {(r["item_id"], r["model"], r["status"], r["turns"]): r["cost_usd"] for r in rows}
    assert len(cost) == 6 and len(rows) == 12
    for (item, model, status, turns), value in cost.items():
        if item == "broken":  # the call failed: nothing says what it cost
            assert (status, turns, value) == ("failed", "0", "")
        elif model == "openai/unpriced-model":  # answered, but at no known price
            assert (status, turns, value) == ("done", "2", "")
        else:
            assert (status, turns) == ("done", "2") and float(value) > 0


# ------------------------------------------------------------------ output files


def test_export_into_a_missing_folder_is_one_line_naming_it(write_config, cli) -> None:
    assert cli("run", str(write_config())).code == 0
    result = cli("export", "--format", "csv", "-o", "no/such/out.csv")
    assert result.code == 2
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert str(Path("no/such")) in result.err
    assert not Path("no").exists()


def test_an_error_midway_leaves_the_previous_export_intact(write_config, cli) -> None:
    assert cli("run", str(write_config())).code == 0
    run_dir = only_run(Path("runs"))
    Path("out.csv").write_text("the previous export\n")
    # A record whose text cannot be written as UTF-8 (a lone surrogate), last in plan order.
    conn = sqlite3.connect(run_dir / "trialrun.db")
    with conn:
        trial_id, text = conn.execute(
            "SELECT trial_id, record FROM records ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        record = json.loads(text)
        record["turns"][-1]["response"] = "\ud800"
        conn.execute(
            "UPDATE records SET record = ? WHERE trial_id = ?", (json.dumps(record), trial_id)
        )
    conn.close()
    with pytest.raises(UnicodeEncodeError):
        cli("export", "--format", "csv", "-o", "out.csv")
    assert Path("out.csv").read_text() == "the previous export\n"
    assert sorted(p.name for p in Path(".").iterdir() if p.name.startswith(".out")) == []


def test_kill_9_mid_export_leaves_the_old_file_never_a_truncated_one(tmp_path: Path) -> None:
    rows = [{"id": f"q{i}", "prompt": f"Claim {i}?", "context": "x" * 4000} for i in range(3000)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = base_config(
        dataset={"path": "items.jsonl"}, models=[{"model": "mock/alpha"}], grid={}, followups=[]
    )
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    assert finish(trialrun_subprocess("run", "exp.yaml", cwd=tmp_path)) == 0
    out = tmp_path / "out.csv"
    out.write_text("the previous export\n")
    old = out.stat()
    proc = trialrun_subprocess("export", "--format", "csv", "-o", "out.csv", cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not _writing_began(tmp_path, old) and proc.poll() is None:
        assert time.monotonic() < deadline, "the export never started writing"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    assert finish(proc) == -signal.SIGKILL, "the export ended before the kill"
    assert out.read_text() == "the previous export\n"

    assert (
        finish(trialrun_subprocess("export", "--format", "csv", "-o", "out.csv", cwd=tmp_path)) == 0
    )
    with out.open(newline="") as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == 3000
    assert not (tmp_path / ".out.csv.tmp").exists()


def _writing_began(folder: Path, old: os.stat_result) -> bool:
    """Bytes of the new export exist somewhere: in a file beside out.csv, or in out.csv."""
    now = (folder / "out.csv").stat()
    if (now.st_size, now.st_mtime_ns) != (old.st_size, old.st_mtime_ns):
        return True
    try:
        return any(p.stat().st_size > 0 for p in folder.glob(".out.csv*"))
    except FileNotFoundError:  # renamed onto out.csv between the listing and the stat
        return True


def finish(proc: subprocess.Popen[str]) -> int:
    """Wait for a subprocess and close its pipes; its exit status."""
    try:
        proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    return proc.returncode
