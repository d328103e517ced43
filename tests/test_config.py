"""Unit tests of the config: validation (loading.validate), KEY=VALUE overrides and multirun
sweeps (overrides.py), YAML reading (config_yaml.py), env references (config.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import base_config
from trialrun.config import (
    RESERVED_TEMPLATE_NAMES,
    Experiment,
    config_warnings,
)
from trialrun.config_yaml import read_yaml
from trialrun.env_refs import env_references, resolve_env
from trialrun.errors import ConfigError, UsageError
from trialrun.loading import validate
from trialrun.overrides import apply_overrides, expand_multirun, parse_override


def config_error(raw: dict, source: str = "exp.yaml") -> str:
    """Validate `raw`, expect a ConfigError, and return its one-line message."""
    with pytest.raises(ConfigError) as info:
        validate(raw, source)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{source}: ")
    return message


# ---------------------------------------------------------------- a good config


def test_good_config_validates_with_defaults_filled_in() -> None:
    experiment = validate(base_config(), "exp.yaml")
    assert isinstance(experiment, Experiment)
    assert experiment.name == "t"
    assert experiment.seed == 7
    assert [m.label for m in experiment.models] == ["mock/alpha", "mock/beta"]
    assert [m.provider for m in experiment.models] == ["mock", "mock"]
    assert experiment.models[0].model_id == "alpha"
    assert experiment.grid == {"temperature": [0.0, 0.7]}
    assert experiment.repeats == 1
    assert experiment.mode == "realtime"
    assert experiment.params == {"max_tokens": 32}
    assert experiment.turn_count() == 2
    assert experiment.dataset.id == "id"
    assert experiment.retry.attempts == 6


def test_validate_does_not_change_the_raw_config() -> None:
    raw = base_config()
    before = repr(raw)
    validate(raw, "exp.yaml")
    assert repr(raw) == before


def test_error_is_a_usage_error_with_exit_status_two() -> None:
    with pytest.raises(UsageError) as info:
        validate(base_config(repeats=0), "exp.yaml")
    assert info.value.exit_code == 2


# ---------------------------------------------------------------- overrides


def test_override_list_value_is_parsed_as_yaml_numbers() -> None:
    raw = apply_overrides(base_config(), ["grid.temperature=[0,0.5]"])
    values = raw["grid"]["temperature"]
    assert values == [0, 0.5]
    assert type(values[0]) is int
    assert type(values[1]) is float
    assert validate(raw, "exp.yaml").grid == {"temperature": [0, 0.5]}


def test_override_integer_value_becomes_an_int() -> None:
    raw = apply_overrides(base_config(), ["repeats=3"])
    assert raw["repeats"] == 3
    assert type(raw["repeats"]) is int
    assert validate(raw, "exp.yaml").repeats == 3


def test_override_reaches_into_a_list_entry_by_index() -> None:
    raw = apply_overrides(base_config(), ["models.0.params.max_tokens=64"])
    experiment = validate(raw, "exp.yaml")
    assert experiment.models[0].params == {"max_tokens": 64}
    assert experiment.models[1].params == {}


def test_override_with_negative_index_reaches_the_last_entry() -> None:
    raw = apply_overrides(base_config(), ["models.-1.name=last"])
    experiment = validate(raw, "exp.yaml")
    assert [m.label for m in experiment.models] == ["mock/alpha", "last"]


def test_override_adds_a_new_grid_key_and_nested_params() -> None:
    raw = apply_overrides(base_config(), ["grid.top_p=[0.9, 1.0]", "params.extra.depth=2"])
    experiment = validate(raw, "exp.yaml")
    assert experiment.grid == {"temperature": [0.0, 0.7], "top_p": [0.9, 1.0]}
    assert experiment.params == {"max_tokens": 32, "extra": {"depth": 2}}


def test_override_string_booleans_and_null_are_yaml_typed() -> None:
    raw = apply_overrides(
        base_config(), ["name=other", "cache.enabled=false", "dataset.limit=null"]
    )
    assert raw["name"] == "other"
    assert raw["cache"] == {"enabled": False}
    assert raw["dataset"]["limit"] is None


def test_overrides_apply_in_order_the_last_one_wins() -> None:
    raw = apply_overrides(base_config(), ["repeats=2", "repeats=5"])
    assert raw["repeats"] == 5


def test_overrides_do_not_change_the_input_config() -> None:
    raw = base_config()
    apply_overrides(raw, ["models.0.params.max_tokens=64", "repeats=3"])
    assert raw == base_config()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("nosuch=1", "nosuch"),
        ("retry.nosuch=1", "retry.nosuch"),
        ("models.0.nosuch=1", "models.0.nosuch"),
    ],
)
def test_override_of_a_key_that_does_not_exist_names_the_override(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(base_config(), [override])
    message = str(info.value)
    assert f"override '{override}'" in message
    assert f"unknown key '{key}'" in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [("task=pkg.mod:fn", None), ("task=not-a-path", "expected package.module:function")],
)
def test_task_override_is_validated_like_the_file(override: str, expected: str | None) -> None:
    raw = apply_overrides(base_config(followups=[]), [override])
    if expected is None:
        assert validate(raw, "exp.yaml").task == "pkg.mod:fn"
        return
    with pytest.raises(ConfigError) as info:
        validate(raw, "exp.yaml")
    assert f"override '{override}'" in str(info.value) and expected in str(info.value)


def test_override_of_a_misspelt_key_suggests_the_closest_name() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key 'retry\.attemps' \(did you mean 'attempts'\?\)"
    ):
        apply_overrides(base_config(), ["retry.attemps=3"])


def test_override_with_a_non_numeric_list_index_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'models\.first'"):
        apply_overrides(base_config(), ["models.first.name=x"])


@pytest.mark.parametrize(
    "override",
    ["models.5.params.max_tokens=64", "models.2.name=x", "models.-3.name=x"],
)
def test_override_with_list_index_out_of_range_is_rejected(override: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(base_config(), [override])
    message = str(info.value)
    assert f"override '{override}'" in message
    assert "out of range" in message


@pytest.mark.parametrize("text", ["repeats", "=3", " =3"])
def test_override_without_key_or_equals_sign_is_rejected(text: str) -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override(text)


def test_override_value_that_is_not_valid_yaml_stays_a_string() -> None:
    assert parse_override("name=[oops") == (["name"], "[oops")


def test_override_value_may_contain_equals_signs() -> None:
    assert parse_override("messages.0.content=a=b") == (["messages", "0", "content"], "a=b")


def test_empty_override_value_is_null() -> None:
    assert parse_override("dataset.limit=") == (["dataset", "limit"], None)


# ---------------------------------------------------------------- unknown keys and types


def test_unknown_key_suggests_the_closest_name() -> None:
    message = config_error(base_config(repeat=3))
    assert "unknown key 'repeat'" in message
    assert "(did you mean 'repeats'?)" in message


@pytest.mark.parametrize(
    ("changes", "key", "suggestion"),
    [
        ({"dataset": {"items": [{"id": "a"}], "limt": 3}}, "dataset.limt", "limit"),
        ({"models": [{"model": "mock/a", "parms": {}}]}, "models.0.parms", "params"),
        ({"retry": {"atempts": 3}}, "retry.atempts", "attempts"),
    ],
)
def test_unknown_nested_key_names_its_dotted_path_and_suggests(
    changes: dict, key: str, suggestion: str
) -> None:
    message = config_error(base_config(**changes))
    assert f"unknown key '{key}' (did you mean '{suggestion}'?)" in message


def test_unknown_key_unlike_any_known_key_lists_the_known_keys() -> None:
    message = config_error(base_config(zzzzzz=1))
    assert "unknown key 'zzzzzz'" in message
    assert "known keys:" in message
    assert "repeats" in message
    assert "did you mean" not in message


def test_wrong_type_names_the_key_and_the_value() -> None:
    message = config_error(base_config(repeats="abc"))
    assert "key 'repeats'" in message
    assert "'abc'" in message


def test_missing_required_key_is_named() -> None:
    raw = base_config()
    del raw["messages"]
    assert "key 'messages' is required" in config_error(raw)


def test_dataset_needs_exactly_one_source() -> None:
    message = config_error(base_config(dataset={"path": "a.jsonl", "items": [{"id": "a"}]}))
    assert "key 'dataset'" in message
    assert "exactly one" in message
    assert "exactly one" in config_error(base_config(dataset={"id": "id"}))


def test_model_without_provider_prefix_is_rejected() -> None:
    message = config_error(base_config(models=[{"model": "gpt-4o"}]))
    assert "key 'models.0.model'" in message
    assert "'gpt-4o'" in message


def test_name_with_spaces_is_rejected() -> None:
    assert "key 'name'" in config_error(base_config(name="my run"))


@pytest.mark.parametrize("repeats", [0, -1])
def test_repeats_must_be_at_least_one(repeats: int) -> None:
    assert "key 'repeats'" in config_error(base_config(repeats=repeats))


# ---------------------------------------------------------------- models, grid, planned keys


def test_literal_api_key_is_rejected() -> None:
    message = config_error(base_config(models=[{"model": "mock/a", "api_key": "sk-live-123"}]))
    assert "key 'models.0.api_key'" in message
    assert "${env:NAME}" in message


def test_literal_api_key_is_not_echoed_in_the_error() -> None:
    """Secrets never go anywhere: the rejected key must not be printed to a terminal or CI log."""
    message = config_error(base_config(models=[{"model": "mock/a", "api_key": "sk-live-123"}]))
    assert "sk-live-123" not in message


def test_api_key_as_env_reference_is_accepted() -> None:
    experiment = validate(
        base_config(models=[{"model": "mock/a", "api_key": "${env:MY_KEY}"}]), "exp.yaml"
    )
    assert experiment.models[0].api_key == "${env:MY_KEY}"


def test_duplicate_model_labels_are_rejected() -> None:
    message = config_error(base_config(models=[{"model": "mock/a"}, {"model": "mock/a"}]))
    assert "'mock/a' appears twice" in message
    assert "name" in message


def test_same_model_twice_with_distinct_names_is_accepted() -> None:
    experiment = validate(
        base_config(models=[{"model": "mock/a"}, {"model": "mock/a", "name": "a-again"}]),
        "exp.yaml",
    )
    assert [m.label for m in experiment.models] == ["mock/a", "a-again"]


def test_name_that_repeats_another_models_label_is_rejected() -> None:
    message = config_error(
        base_config(models=[{"model": "mock/a"}, {"model": "mock/b", "name": "mock/a"}])
    )
    assert "appears twice" in message


@pytest.mark.parametrize("key", sorted(RESERVED_TEMPLATE_NAMES))
def test_reserved_grid_keys_are_rejected(key: str) -> None:
    message = config_error(base_config(grid={key: [1, 2]}))
    assert f"grid key '{key}' is reserved" in message


def test_grid_key_without_values_is_rejected() -> None:
    assert "grid key 'temperature' has no values" in config_error(
        base_config(grid={"temperature": []})
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"task": "pkg.mod"}, "key 'task': expected package.module:function"),
        ({"task": "pkg.mod:fn", "mode": "batch"}, "batch mode cannot"),
        ({"task": "pkg.mod:fn"}, "task: a custom trial makes its own turns; remove followups"),
    ],
)
def test_task_bad_input_says_what_is_expected(changes: dict[str, object], expected: str) -> None:
    assert expected in config_error(base_config(**changes))


def test_unknown_mode_is_rejected_as_a_wrong_value() -> None:
    message = config_error(base_config(mode="turbo"))
    assert "key 'mode'" in message
    assert "planned" not in message


# ---------------------------------------------------------------- multirun


def test_multirun_splits_comma_separated_values() -> None:
    assert expand_multirun(["repeats=1,2,3"]) == [["repeats=1"], ["repeats=2"], ["repeats=3"]]


def test_multirun_keeps_brackets_and_braces_together() -> None:
    assert expand_multirun(["grid.temperature=[0,0.5]"]) == [["grid.temperature=[0,0.5]"]]
    assert expand_multirun(["params={a: 1, b: 2},{a: 3}"]) == [
        ["params={a: 1, b: 2}"],
        ["params={a: 3}"],
    ]


def test_multirun_is_the_cartesian_product_in_order() -> None:
    combos = expand_multirun(["repeats=1,2", "grid.temperature=[0,0.5],[1]", "name=x"])
    assert combos == [
        ["repeats=1", "grid.temperature=[0,0.5]", "name=x"],
        ["repeats=1", "grid.temperature=[1]", "name=x"],
        ["repeats=2", "grid.temperature=[0,0.5]", "name=x"],
        ["repeats=2", "grid.temperature=[1]", "name=x"],
    ]


def test_multirun_without_overrides_is_one_experiment() -> None:
    assert expand_multirun([]) == [[]]


def test_multirun_keeps_a_quoted_value_with_a_comma_together() -> None:
    """Hydra users quote a value to keep its comma: `key='a, b'` is one value, not two."""
    combos = expand_multirun(["messages.0.content='Hello, world'"])
    assert combos == [["messages.0.content='Hello, world'"]]


def test_every_multirun_combination_is_a_valid_override_set() -> None:
    for combo in expand_multirun(["repeats=1,2", "grid.temperature=[0,0.5],[1]"]):
        experiment = validate(apply_overrides(base_config(), combo), "exp.yaml")
        assert experiment.repeats in (1, 2)
        assert experiment.grid["temperature"] in ([0, 0.5], [1])


# ---------------------------------------------------------------- env references


def test_resolve_env_replaces_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIALRUN_TEST_KEY", "sekret")
    monkeypatch.setenv("TRIALRUN_TEST_HOST", "example.org")
    value = {
        "api_key": "${env:TRIALRUN_TEST_KEY}",
        "urls": ["https://${env:TRIALRUN_TEST_HOST}/v1", "plain"],
        "n": 3,
        "none": None,
    }
    assert resolve_env(value, "models[0]") == {
        "api_key": "sekret",
        "urls": ["https://example.org/v1", "plain"],
        "n": 3,
        "none": None,
    }


def test_resolve_env_of_unset_variable_names_it_and_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRIALRUN_TEST_MISSING", raising=False)
    with pytest.raises(ConfigError) as info:
        resolve_env({"options": {"token": "${env:TRIALRUN_TEST_MISSING}"}}, "models[1]")
    message = str(info.value)
    assert "TRIALRUN_TEST_MISSING" in message
    assert "models[1].options.token" in message
    assert "not set" in message


def test_resolve_env_leaves_text_without_references_alone() -> None:
    assert resolve_env("$HOME and ${env:} and {env:X}", "x") == "$HOME and ${env:} and {env:X}"


def test_env_references_lists_every_name() -> None:
    raw = base_config(
        models=[
            {"model": "mock/a", "api_key": "${env:KEY_A}"},
            {"model": "mock/b", "base_url": "http://${env:HOST}:${env:PORT}/v1"},
        ]
    )
    assert env_references(raw) == {"KEY_A", "HOST", "PORT"}
    assert env_references(base_config()) == set()


def test_env_reference_is_not_resolved_by_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIALRUN_TEST_KEY", "sekret")
    experiment = validate(
        base_config(models=[{"model": "mock/a", "api_key": "${env:TRIALRUN_TEST_KEY}"}]),
        "exp.yaml",
    )
    assert "sekret" not in experiment.model_dump_json()


# ---------------------------------------------------------------- reading YAML


def test_read_yaml_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        read_yaml(tmp_path / "nope.yaml")


def test_read_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nseed: 1\nmodels: [a, b\nrepeats: 2\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert "line 4" in message
    assert "YAML syntax error" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_read_yaml_requires_a_mapping_at_the_top(tmp_path: Path, text: str) -> None:
    path = tmp_path / "top.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_yaml(path)


def test_read_yaml_refuses_python_object_tags(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        read_yaml(path)


def test_exponent_numbers_without_a_dot_are_floats_in_overrides_and_files(tmp_path) -> None:
    assert parse_override("grid.min_p=[1e-5, 2E3]")[1] == [1e-5, 2000.0]
    path = tmp_path / "exp.yaml"
    path.write_text("name: t\nseed: 1\nlr: 1e-3\n")
    assert read_yaml(path)["lr"] == 0.001


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("options", {"api_token": "abc123"}),
        ("options", {"headers": {"Authorization": "Bearer abcdefabcdef1234"}}),
        ("params", {"user": "sk-proj-0123456789abcdef0123"}),
        ("base_url", "https://me:sk-0123456789abcdefghij@proxy.example/v1"),
    ],
)
def test_secrets_in_clear_anywhere_in_a_model_entry_are_refused_and_not_echoed(
    where: str, value: object
) -> None:
    raw = base_config()
    raw["models"][0][where] = value
    with pytest.raises(ConfigError, match=r"secret|credentials") as info:
        validate(raw, "exp.yaml")
    for secret in ("abc123", "abcdefabcdef1234", "sk-proj-0123456789abcdef0123", "sk-0123456789"):
        assert secret not in str(info.value)


def test_secrets_as_references_in_options_and_base_url_are_accepted() -> None:
    raw = base_config()
    raw["models"][0]["options"] = {"api_token": "${env:MY_TOKEN}"}
    raw["models"][0]["base_url"] = "https://${env:USER}:${env:PASS}@proxy.example/v1"
    raw["params"] = {"max_tokens": 32, "stop_token": "</s>"}
    validate(raw, "exp.yaml")


# ---------------------------------------------------------------- warnings, and whom an error blames


def test_limits_for_a_provider_no_model_uses_is_a_warning_with_a_hint() -> None:
    experiment = validate(base_config(limits={"mokc": {"rpm": 60}, "mock": {"rpm": 60}}), "x")
    assert config_warnings(experiment) == [
        "limits.mokc: no model uses provider 'mokc', so it limits nothing (did you mean 'mock'?)"
    ]


def test_limits_after_the_models_were_replaced_warn_and_name_the_providers_in_use() -> None:
    raw = apply_overrides(base_config(limits={"mock": {"rpm": 60}}), ["models.0.model=openai/x"])
    raw = apply_overrides(raw, ["models.1.model=openai/y"])
    (warning,) = config_warnings(validate(raw, "exp.yaml"))
    assert warning.startswith("limits.mock: no model uses provider 'mock'")
    assert "openai" in warning


def test_limits_for_providers_in_use_give_no_warning() -> None:
    experiment = validate(base_config(limits={"mock": {"rpm": 60}}), "exp.yaml")
    assert config_warnings(experiment) == []


def test_bad_value_set_by_an_override_names_the_override_not_the_file() -> None:
    raw = apply_overrides(base_config(), ["repeats=2", "models.-1.params=3"])
    with pytest.raises(ConfigError) as info:
        validate(raw, "exp.yaml")
    message = str(info.value)
    assert message.startswith("override 'models.-1.params=3': key 'models.1.params'"), message


def test_bad_value_from_the_file_is_still_blamed_on_the_file() -> None:
    raw = apply_overrides(base_config(repeats=0), ["seed=3"])
    message = config_error(raw)
    assert "key 'repeats'" in message
    assert "override" not in message


def test_override_that_breaks_a_rule_of_the_whole_config_is_named() -> None:
    raw = apply_overrides(base_config(), ["models.1.model=mock/alpha"])
    with pytest.raises(ConfigError) as info:
        validate(raw, "exp.yaml")
    message = str(info.value)
    assert message.startswith("exp.yaml with override 'models.1.model=mock/alpha': "), message
    assert "appears twice" in message


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("temperature=0.3", "did you mean params.temperature or grid.temperature?"),
        ("models.0.top_p=0.9", "did you mean models.0.params.top_p?"),
    ],
)
def test_sampling_param_given_as_a_key_says_where_params_go(override: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(hint)):
        apply_overrides(base_config(), [override])


def test_sampling_param_at_the_top_of_a_config_file_says_where_params_go() -> None:
    message = config_error(base_config(max_tokens=64))
    assert "'max_tokens' (did you mean params.max_tokens or grid.max_tokens?)" in message
