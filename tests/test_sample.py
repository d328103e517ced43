"""`dataset.sample`: a seeded, stratified random sample of the items, the same on every
machine, in the proportions asked for, recorded in manifest.json."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, only_run, read_results
from trialrun.sampling import allocate, draw

Cli = Callable[..., CliResult]
SIZES = {"a": 500, "b": 300, "c": 150, "d": 50}


def _items() -> list[dict[str, Any]]:
    return [
        {"id": f"{name}{i:04d}", "prompt": "?", "category": name}
        for name, size in SIZES.items()
        for i in range(size)
    ]


def test_proportional_allocation_uses_largest_remainders() -> None:
    # 7 of 1000: exact shares 3.5, 2.1, 1.05, 0.35 -> floors 3, 2, 1, 0 and one more to `a`
    assert allocate(SIZES, 7, "proportional") == {"a": 4, "b": 2, "c": 1, "d": 0}
    assert allocate(SIZES, 800, "proportional") == {"a": 400, "b": 240, "c": 120, "d": 40}
    assert sum(allocate(SIZES, 333, "proportional").values()) == 333


def test_equal_allocation_is_capped_by_each_stratum_and_shares_the_rest() -> None:
    # 100 each, but `d` has 50: its other 50 are shared by a, b, c (17, 17, 16)
    assert allocate(SIZES, 400, "equal") == {"a": 117, "b": 117, "c": 116, "d": 50}
    assert allocate(SIZES, 5000, "equal") == SIZES


def test_a_draw_depends_on_the_seed_and_the_items_not_on_their_order() -> None:
    items = _items()
    ids, strata = [i["id"] for i in items], [i["category"] for i in items]
    kept, counts = draw(ids, strata, 100, seed=1)
    again, _ = draw(ids, strata, 100, seed=1)
    other, _ = draw(ids, strata, 100, seed=2)
    assert kept == again and kept != other
    assert counts == {"a": 50, "b": 30, "c": 15, "d": 5}
    assert Counter(strata[i] for i in kept) == counts
    shuffled = list(reversed(range(len(ids))))
    moved, _ = draw([ids[i] for i in shuffled], [strata[i] for i in shuffled], 100, seed=1)
    assert sorted(ids[shuffled[i]] for i in moved) == sorted(ids[i] for i in kept)


def test_a_simple_random_sample_without_stratify() -> None:
    ids = [f"x{i}" for i in range(50)]
    kept, counts = draw(ids, None, 10, seed=3)
    assert len(set(kept)) == 10 and counts == {"all": 10}


def test_a_run_samples_its_items_and_records_the_sample_in_the_manifest(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    sample = {"n": 80, "stratify": "category", "seed": 1}
    write_config(
        dataset={"items": _items(), "sample": sample}, grid={}, followups=[],
        models=[{"model": "mock/a"}], messages=[{"role": "user", "content": "{{ item.prompt }}"}],
    )  # fmt: skip
    result = cli("run", "exp.yaml")
    assert result.code == 0, result.err
    run = only_run(tmp_path / "runs")
    records = read_results(run)
    assert Counter(r["item"]["category"] for r in records) == {"a": 40, "b": 24, "c": 12, "d": 4}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["sample"] == {
        **sample, "allocation": "proportional", "items_read": 1000, "sampled": 80,
        "strata": {"a": 40, "b": 24, "c": 12, "d": 4},
    }  # fmt: skip
    items = _items()
    kept, _ = draw([i["id"] for i in items], [i["category"] for i in items], 80, seed=1)
    assert [r["item_id"] for r in records] == [items[i]["id"] for i in kept]


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"limit": 5, "sample": {"n": 5}}, "not both"),
        ({"sample": {"n": 5, "stratify": "colour"}}, "no field 'colour' to stratify by"),
        ({"sample": {"n": 0}}, "dataset.sample.n"),
    ],
)
def test_bad_samples_are_refused_in_one_line(
    cli: Cli, write_config: Callable[..., Path], dataset: dict[str, Any], message: str
) -> None:
    write_config(dataset={"items": _items()[:20], **dataset})
    result = cli("plan", "exp.yaml")
    assert result.code == 2 and message in result.err
    assert len(result.err.strip().splitlines()) == 1
