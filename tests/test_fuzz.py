"""Input fuzzing: whatever a user writes — configs, overrides, dataset rows — trialrun either
accepts it or exits 2 with one line naming what is wrong. Never a traceback, never a
half-written run folder, and YAML never constructs objects from tags."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CliResult, base_config

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=10),
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3),  # "\\ud800"
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)
KEYS = [
    "name", "seed", "dataset", "models", "grid", "repeats", "messages", "followups", "params",
    "mode", "limits", "retry", "cache", "mock", "output", "prices", "batch",
]  # fmt: skip


def assert_clean(result: CliResult, isolated: Path) -> None:
    """Accepted (0), or one line and status 2; no traceback either way."""
    assert "Traceback" not in result.out + result.err
    assert result.code in (0, 2), (result.code, result.err)
    if result.code == 2:
        lines = [line for line in result.err.splitlines() if line.strip()]
        assert len(lines) == 1, result.err
        assert lines[0].startswith("trialrun: error:")
    runs = isolated / "runs"
    assert not runs.exists() or not any(p.name.startswith(".") for p in runs.iterdir())


@FUZZ
@given(key=st.sampled_from(KEYS), value=trees)
def test_any_value_under_any_key(
    cli: Callable[..., CliResult], isolated: Path, key: str, value: Any
) -> None:
    config = base_config(**{key: value})
    path = isolated / "fuzz.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    assert_clean(cli("plan", str(path)), isolated)


@FUZZ
@given(document=trees)
def test_any_yaml_document(cli: Callable[..., CliResult], isolated: Path, document: Any) -> None:
    path = isolated / "fuzz.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    assert_clean(cli("plan", str(path)), isolated)


@FUZZ
@given(text=st.text(max_size=200))
def test_any_bytes_as_a_config(cli: Callable[..., CliResult], isolated: Path, text: str) -> None:
    path = isolated / "fuzz.yaml"
    path.write_text(text)
    assert_clean(cli("plan", str(path)), isolated)


@FUZZ
@given(
    overrides=st.lists(
        st.one_of(
            st.builds(
                "{}={}".format,
                st.sampled_from(
                    [*KEYS, "grid.temperature", "models.0.params", "dataset.limit", "x.y"]
                ),
                st.text(max_size=20),
            ),
            st.text(max_size=20).map(lambda t: t + "=1"),
        ),
        max_size=3,
    )
)
def test_any_override(
    cli: Callable[..., CliResult],
    write_config: Callable[..., Path],
    isolated: Path,
    overrides: list[str],
) -> None:
    path = write_config()
    assert_clean(cli("plan", str(path), *overrides), isolated)


@FUZZ
@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(["id", "prompt", "category", "x"]), trees, max_size=4),
        min_size=1,
        max_size=6,
    )
)
def test_any_dataset_rows(
    cli: Callable[..., CliResult], isolated: Path, rows: list[dict[str, Any]]
) -> None:
    data = isolated / "rows.jsonl"
    data.write_text("\n".join(json.dumps(row, default=str) for row in rows) + "\n")
    config = base_config(dataset={"path": str(data)})
    path = isolated / "fuzz.yaml"
    path.write_text(yaml.safe_dump(config))
    assert_clean(cli("plan", str(path)), isolated)


def test_yaml_tags_never_construct_objects(cli: Callable[..., CliResult], isolated: Path) -> None:
    marker = isolated / "pwned"
    path = isolated / "evil.yaml"
    path.write_text(
        f"name: !!python/object/apply:os.system ['touch {marker}']\n"
        "seed: !!python/object/new:collections.OrderedDict []\n"
    )
    result = cli("plan", str(path))
    assert_clean(result, isolated)
    assert result.code == 2
    assert not marker.exists()


def test_a_billion_laughs_is_refused_quickly(cli: Callable[..., CliResult], isolated: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    config = yaml.safe_dump(base_config()) + "\n".join(lines) + "\ngrid: {x: *a9}\n"
    path = isolated / "laughs.yaml"
    path.write_text(config)
    result = cli("plan", str(path))
    assert_clean(result, isolated)
    assert result.code == 2


def test_a_billion_laughs_in_an_override_is_refused_quickly(
    cli: Callable[..., CliResult], write_config: Callable[..., Path], isolated: Path
) -> None:
    value = "[&a0 [1,1,1,1,1,1,1,1,1]"
    for i in range(1, 10):
        value += f", &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]"
    value += "]"
    result = cli("plan", str(write_config()), f"grid.x={value}")
    assert_clean(result, isolated)
    assert result.code == 2
    assert "aliases" in result.err


def test_a_run_reference_that_cannot_be_a_path(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    for command in ("status", "resume", "export", "collect"):
        result = cli(command, "r" * 5000)
        assert_clean(result, isolated)
        assert result.code == 2


def test_a_lone_surrogate_is_one_line_naming_where(
    cli: Callable[..., CliResult], isolated: Path
) -> None:
    rows = isolated / "rows.jsonl"
    rows.write_text(
        '{"id": "a", "prompt": "ok", "category": "c"}\n'
        '{"id": "b", "prompt": "x\\ud800", "category": "c"}\n'
    )
    path = isolated / "exp.yaml"
    path.write_text(yaml.safe_dump(base_config(dataset={"path": str(rows)})))
    result = cli("plan", str(path))
    assert_clean(result, isolated)
    assert f"{rows}:2: text holds \\ud800, a lone surrogate" in result.err

    path.write_text(yaml.safe_dump(base_config(name="x\udc80")))
    result = cli("plan", str(path))
    assert_clean(result, isolated)
    assert "key 'name': text holds \\udc80, a lone surrogate" in result.err
