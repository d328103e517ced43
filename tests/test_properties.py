"""Property tests: stable unique trial ids, seeds, shards, overrides, canonical JSON."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
import yaml
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from conftest import base_config
from trialrun.config import RESERVED_TEMPLATE_NAMES, Experiment
from trialrun.hashing import canonical
from trialrun.loading import validate
from trialrun.overrides import apply_overrides
from trialrun.plan import Shard, cells, count_trials, expand, trial_id, trial_seed

FAST = settings(max_examples=60, deadline=None)


def reference_json(value: Any) -> str:
    """The definition of canonical JSON: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------- strategies

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,11}", fullmatch=True)
labels = st.builds(
    lambda s: f"mock/{s}", st.from_regex(r"[a-z0-9][a-z0-9._-]{0,9}", fullmatch=True)
)
item_ids = st.text(min_size=1, max_size=8)
grid_keys = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True).filter(
    lambda k: k not in RESERVED_TEMPLATE_NAMES
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | finite_floats
    | st.text(max_size=12)
)
grid_values = st.lists(scalars, min_size=1, max_size=3, unique_by=reference_json)
grids = st.dictionaries(grid_keys, grid_values, max_size=3)
cell_values = st.dictionaries(grid_keys, scalars, max_size=3)


def make_experiment(
    name: str = "t",
    models: list[str] | None = None,
    grid: dict[str, list[Any]] | None = None,
    repeats: int = 1,
    seed: int = 7,
) -> Experiment:
    grid = grid if grid is not None else {}
    raw = base_config(
        name=name,
        seed=seed,
        models=[{"model": m} for m in (models or ["mock/alpha"])],
        grid=grid,
        repeats=repeats,
        followups=[mentioning(grid)],
    )
    return validate(raw, "exp.yaml")


def mentioning(keys: Any) -> str:
    """A follow-up template that uses every grid key, so each key is a legitimate template value."""
    return "Sure? " + " ".join(f"{{{{ {key} }}}}" for key in keys)


experiments = st.builds(
    make_experiment,
    name=names,
    models=st.lists(labels, min_size=1, max_size=3, unique=True),
    grid=grids,
    repeats=st.integers(min_value=1, max_value=3),
    seed=st.integers(min_value=-(2**40), max_value=2**40),
)
item_id_lists = st.lists(item_ids, min_size=1, max_size=5, unique=True)


def without_seq(trials: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (t.trial_id, t.item_id, t.model, reference_json(t.grid), t.repeat, t.seed) for t in trials
    ]


# ---------------------------------------------------------------- trial ids


@FAST
@given(experiment=experiments, ids=item_id_lists)
def test_same_config_gives_the_same_trials_in_the_same_order(
    experiment: Experiment, ids: list[str]
) -> None:
    first = list(expand(experiment, ids))
    again = list(expand(experiment, list(ids)))
    assert first == again
    twin = Experiment.model_validate(copy.deepcopy(experiment.model_dump(mode="json")))
    assert list(expand(twin, ids)) == first
    assert [t.seq for t in first] == list(range(len(first)))


@FAST
@given(experiment=experiments, ids=item_id_lists)
def test_trial_ids_are_unique_across_items_models_grid_and_repeats(
    experiment: Experiment, ids: list[str]
) -> None:
    trials = list(expand(experiment, ids))
    assert len(trials) == count_trials(experiment, len(ids))
    assert (
        len(trials)
        == len(ids) * len(experiment.models) * len(cells(experiment.grid)) * experiment.repeats
    )
    assert len({t.trial_id for t in trials}) == len(trials)
    assert all(t.trial_id.startswith("t_") and len(t.trial_id) == 18 for t in trials)


@FAST
@given(experiment=experiments, ids=item_id_lists)
def test_seeds_are_31_bit_and_derive_from_seed_and_id(
    experiment: Experiment, ids: list[str]
) -> None:
    for trial in expand(experiment, ids):
        assert 0 <= trial.seed < 2**31
        assert trial.seed == trial_seed(experiment.seed, trial.trial_id)


@FAST
@given(seed=st.integers(), tid=st.text())
def test_trial_seed_is_always_in_range(seed: int, tid: str) -> None:
    assert 0 <= trial_seed(seed, tid) < 2**31
    assert trial_seed(seed, tid) == trial_seed(seed, tid)


parts = st.tuples(names, labels, item_ids, cell_values, st.integers(min_value=0, max_value=50))


@pytest.mark.parametrize("which", ["name", "model", "item_id", "grid", "repeat"])
@settings(max_examples=40, deadline=None)
@given(base=parts, data=st.data())
def test_changing_any_one_part_changes_the_trial_id(
    which: str, base: tuple[str, str, str, dict[str, Any], int], data: st.DataObject
) -> None:
    name, model, item, grid, repeat = base
    changed = {"name": name, "model": model, "item_id": item, "grid": grid, "repeat": repeat}
    if which == "name":
        changed["name"] = data.draw(names.filter(lambda v: v != name))
    elif which == "model":
        changed["model"] = data.draw(labels.filter(lambda v: v != model))
    elif which == "item_id":
        changed["item_id"] = data.draw(item_ids.filter(lambda v: v != item))
    elif which == "repeat":
        changed["repeat"] = data.draw(
            st.integers(min_value=0, max_value=50).filter(lambda v: v != repeat)
        )
    else:
        assume(grid)
        key = data.draw(st.sampled_from(sorted(grid)))
        value = data.draw(scalars.filter(lambda v: reference_json(v) != reference_json(grid[key])))
        changed["grid"] = {**grid, key: value}
    assert trial_id(**changed) != trial_id(name, model, item, grid, repeat)


@FAST
@given(grid=cell_values)
def test_trial_id_does_not_depend_on_grid_key_order(grid: dict[str, Any]) -> None:
    reordered = dict(reversed(list(grid.items())))
    assert trial_id("t", "mock/a", "q1", grid, 0) == trial_id("t", "mock/a", "q1", reordered, 0)


@FAST
@given(base=parts)
@example(base=("t", "mock/a", "q1", {"min_p": 1e-05}, 0))
@example(base=("t", "mock/a", "q1", {"lr": 3e-07}, 0))
def test_trial_id_is_the_hash_of_the_documented_canonical_json(
    base: tuple[str, str, str, dict[str, Any], int],
) -> None:
    """Trial ids must not drift between versions: they hash the json.dumps canonical form."""
    name, model, item, grid, repeat = base
    text = reference_json([name, model, item, grid, repeat])
    expected = "t_" + hashlib.sha256(text.encode()).hexdigest()[:16]
    assert trial_id(name, model, item, grid, repeat) == expected


# ---------------------------------------------------------------- shards


@FAST
@given(experiment=experiments, ids=item_id_lists, count=st.integers(min_value=1, max_value=7))
def test_shards_partition_the_trials_exactly(
    experiment: Experiment, ids: list[str], count: int
) -> None:
    everything = without_seq(list(expand(experiment, ids)))
    seen: list[tuple[Any, ...]] = []
    for index in range(count):
        shard = Shard.parse(f"{index}/{count}")
        assert str(shard) == f"{index}/{count}"
        part = list(expand(experiment, ids, shard))
        assert [t.seq for t in part] == list(range(len(part)))
        rows = without_seq(part)
        # each shard keeps the full plan's order
        assert rows == [row for row in everything if row in set(rows)]
        seen.extend(rows)
    assert len(seen) == len(everything)
    assert set(seen) == set(everything)


@FAST
@given(experiment=experiments, ids=item_id_lists, limit=st.integers(min_value=1, max_value=40))
def test_limit_keeps_a_prefix_of_the_plan(
    experiment: Experiment, ids: list[str], limit: int
) -> None:
    everything = list(expand(experiment, ids))
    assert list(expand(experiment, ids, limit=limit)) == everything[:limit]


# ---------------------------------------------------------------- overrides


def as_yaml(value: Any) -> str:
    """The override text for `value`: one YAML flow document, as a user would type it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), allow_unicode=True)
    text = text.removesuffix("\n").removesuffix("\n...")
    assert yaml.safe_load(text) == value  # the encoder, not trialrun, is checked here
    return text


yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | finite_floats
    | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
)
yaml_values = yaml_scalars | st.lists(yaml_scalars, max_size=4)
param_keys = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True)


def same(a: Any, b: Any) -> bool:
    """Equal including types (1, 1.0 and True are different values here)."""
    return reference_json(a) == reference_json(b)


@FAST
@given(
    key=grid_keys, value=st.lists(yaml_scalars, min_size=1, max_size=4, unique_by=reference_json)
)
def test_grid_override_sets_the_grid_values(key: str, value: list[Any]) -> None:
    raw = apply_overrides(
        base_config(followups=[mentioning([key])]), [f"grid.{key}={as_yaml(value)}"]
    )
    experiment = validate(raw, "exp.yaml")
    assert same(experiment.grid[key], value)


@FAST
@given(path=st.lists(param_keys, min_size=1, max_size=3), value=yaml_values)
def test_params_override_sets_a_nested_value(path: list[str], value: Any) -> None:
    raw = apply_overrides(base_config(), [f"params.{'.'.join(path)}={as_yaml(value)}"])
    node: Any = validate(raw, "exp.yaml").params
    for part in path:
        node = node[part]
    assert same(node, value)


@FAST
@given(
    index=st.integers(min_value=0, max_value=1),
    path=st.lists(param_keys, min_size=1, max_size=2),
    value=yaml_values,
)
def test_model_params_override_sets_only_that_model(
    index: int, path: list[str], value: Any
) -> None:
    override = f"models.{index}.params.{'.'.join(path)}={as_yaml(value)}"
    experiment = validate(apply_overrides(base_config(), [override]), "exp.yaml")
    node: Any = experiment.models[index].params
    for part in path:
        node = node[part]
    assert same(node, value)
    assert experiment.models[1 - index].params == {}


# ---------------------------------------------------------------- canonical JSON

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | finite_floats
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(value=json_values)
@example(value=1e-05)
@example(value={"lr": 3e-07, "b": [1.5e-09]})
@example(value={"ü": "😀", "a": "\u2028\x00\x7f", "Z": 2**63 - 1})
def test_canonical_equals_sorted_compact_json_dumps(value: Any) -> None:
    assert canonical(value) == reference_json(value)


@FAST
@given(value=json_values)
def test_canonical_round_trips(value: Any) -> None:
    assert json.loads(canonical(value)) == value
