"""Unit tests of templates.py: rendering, the plain-field fast path, checks, and the sandbox."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conftest import base_config, only_run, read_results, trialrun_subprocess
from trialrun.config import Experiment
from trialrun.errors import ConfigError, TrialrunError
from trialrun.loading import validate
from trialrun.templates import Conversation, Template

ITEM = {"id": "q1", "prompt": "Is the sky blue?", "category": "easy", "n": 3}
# An independent Jinja environment configured as trialrun documents: sandboxed, strict, no escaping.
REFERENCE = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)


def context(
    item: dict[str, Any] | None = None,
    grid: dict[str, Any] | None = None,
    turns: list[dict[str, str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The context the executor renders with: item, grid (also by name), turns, model, repeat."""
    grid = grid if grid is not None else {"temperature": 0.7}
    return {
        "item": item if item is not None else ITEM,
        "grid": grid,
        **grid,
        "model": "mock/alpha",
        "repeat": 1,
        "seed": 1234,
        "turn": 1 + len(turns or []),
        "turns": turns or [],
        **extra,
    }


def conversation(**changes: Any) -> Conversation:
    return Conversation(validate(base_config(**changes), "exp.yaml"), "exp.yaml")


def check_error(items: list[dict[str, Any]] | None = None, **changes: Any) -> str:
    conv = conversation(**changes)
    with pytest.raises(ConfigError) as info:
        conv.check(items if items is not None else [ITEM])
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- rendering


def test_first_messages_render_item_fields_with_their_roles() -> None:
    conv = conversation(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "[{{ item.category }}] {{ item.prompt }}"},
        ]
    )
    assert conv.first_messages(context()) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "[easy] Is the sky blue?"},
    ]


def test_grid_values_render_by_name_and_under_grid() -> None:
    conv = conversation(
        grid={"temperature": [0.0, 0.7], "style": ["terse", "long"]},
        messages=[{"role": "user", "content": "{{ style }}/{{ grid.style }} at {{ temperature }}"}],
    )
    ctx = context(grid={"temperature": 0.7, "style": "terse"})
    assert conv.first_messages(ctx) == [{"role": "user", "content": "terse/terse at 0.7"}]


def test_model_repeat_and_seed_reach_templates() -> None:
    conv = conversation(
        messages=[{"role": "user", "content": "{{ model }} #{{ repeat }} s{{ seed }}"}]
    )
    assert conv.first_messages(context())[0]["content"] == "mock/alpha #1 s1234"


def test_followup_sees_the_previous_turns() -> None:
    conv = conversation(
        followups=[
            "You said: {{ turns[-1].response }} (to: {{ turns[0].user }}) turn {{ turn }}",
            "{% for t in turns %}{{ loop.index }}={{ t.response }};{% endfor %}",
        ]
    )
    history = [{"user": "Is the sky blue?", "response": "Yes."}]
    assert conv.followup(0, context(turns=history)) == {
        "role": "user",
        "content": "You said: Yes. (to: Is the sky blue?) turn 2",
    }
    history.append({"user": "Sure?", "response": "Quite."})
    assert conv.followup(1, context(turns=history))["content"] == "1=Yes.;2=Quite.;"


def test_item_fields_render_with_subscript_filters_and_conditions() -> None:
    template = Template(
        "{{ item['prompt'] | upper }}{% if item.n > 2 %} (hard){% endif %}", "messages[0].content"
    )
    assert template.render(context()) == "IS THE SKY BLUE? (hard)"


def test_text_without_jinja_syntax_renders_verbatim() -> None:
    text = "Answer yes or no.\n  Then explain {briefly} [1].\n"
    assert Template(text, "messages[0].content").render(context()) == text


def test_template_without_variables_is_still_rendered_by_jinja() -> None:
    """Expressions, comments and raw blocks work even when a template names no variable."""
    assert Template("Answer in {{ 3 * 2 }} words.", "w").render(context()) == "Answer in 6 words."
    assert Template("Hello{# note to self #}!", "w").render(context()) == "Hello!"
    assert Template("{% raw %}{{ x }}{% endraw %}", "w").render(context()) == "{{ x }}"


def test_trailing_newline_is_kept() -> None:
    assert Template("{{ item.category }} x\n", "w").render(context()) == "easy x\n"


# ---------------------------------------------------------------- plain-field fast path


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "",
        "multi\nline\n",
        "{{ not a template }}",
        "<b>&amp;</b>",
        "ünï ✓ 😀",
        "  spaced  ",
    ],
)
@pytest.mark.parametrize("source", ["{{ item.x }}", "{{item.x}}", "{{   item.x\t}}"])
def test_plain_field_gives_the_same_text_as_jinja_for_strings(source: str, value: str) -> None:
    ctx = context(item={"id": "a", "x": value})
    assert Template(source, "w").render(ctx) == REFERENCE.from_string(source).render(ctx)
    assert Template(source, "w").render(ctx) == value


@settings(max_examples=50, deadline=None)
@given(value=st.text())
def test_plain_field_matches_jinja_for_any_string(value: str) -> None:
    ctx = context(item={"id": "a", "x": value})
    source = "{{ item.x }}"
    assert Template(source, "w").render(ctx) == REFERENCE.from_string(source).render(ctx)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (0.5, "0.5"),
        (True, "True"),
        (None, "None"),
        ([1, 2], "[1, 2]"),
        ({"a": 1}, "{'a': 1}"),
    ],
)
def test_plain_field_falls_back_to_jinja_for_non_strings(value: object, text: str) -> None:
    ctx = context(item={"id": "a", "x": value})
    rendered = Template("{{ item.x }}", "w").render(ctx)
    assert rendered == text
    assert rendered == REFERENCE.from_string("{{ item.x }}").render(ctx)


def test_plain_field_missing_from_the_item_raises_a_trialrun_error() -> None:
    """The fast path must fail as Jinja does (a TrialrunError naming the template), not KeyError."""
    with pytest.raises(TrialrunError, match=r"messages\[1\]\.content"):
        Template("{{ item.missing }}", "exp.yaml: messages[1].content").render(context())


def test_non_plain_field_missing_from_the_item_raises_a_trialrun_error() -> None:
    with pytest.raises(TrialrunError, match=r"messages\[1\]\.content: cannot render"):
        Template("Q: {{ item.missing }}", "exp.yaml: messages[1].content").render(context())


# ---------------------------------------------------------------- checks before running


def test_check_accepts_item_fields_grid_names_and_reserved_names() -> None:
    conv = conversation(
        grid={"temperature": [0.0], "style": ["a"]},
        messages=[
            {"role": "system", "content": "{{ style }} {{ grid.temperature }} {{ model }}"},
            {"role": "user", "content": "{{ item.prompt }} {{ repeat }} {{ seed }}"},
        ],
        followups=["{{ turns[-1].response }} {{ turn }} {{ item.category }}"],
    )
    conv.check([ITEM, {**ITEM, "id": "q2"}])


def test_check_rejects_an_unknown_top_level_name() -> None:
    message = check_error(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "{{ prompt }}"},
        ]
    )
    assert message.startswith("exp.yaml: messages[1].content: unknown name 'prompt'")


def test_check_rejects_a_grid_name_that_is_not_in_the_grid() -> None:
    message = check_error(followups=["{{ top_p }}"])
    assert message.startswith("exp.yaml: followups[0]: unknown name 'top_p'")


def test_check_rejects_an_item_field_the_items_lack() -> None:
    message = check_error(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "{{ item.question }}"},
        ]
    )
    assert message.startswith("exp.yaml: messages[1].content: uses item.question")
    assert "category, id, n, prompt" in message


def test_check_rejects_a_field_only_some_items_have() -> None:
    items: list[dict[str, Any]] = [ITEM, {"id": "q2", "prompt": "x", "category": "c"}]
    message = check_error(items, followups=["{{ item.n }}"])
    assert message.startswith("exp.yaml: followups[0]: uses item.n")


def test_check_item_names_where_the_item_was_read() -> None:
    conv = conversation(followups=["{{ item.n }}"])
    with pytest.raises(ConfigError) as info:
        conv.check_item({"id": "q2", "prompt": "x"}, "items.jsonl:7")
    assert "uses item.n but the item at items.jsonl:7 has no such field" in str(info.value)


def test_check_rejects_a_subscripted_field_the_items_lack() -> None:
    message = check_error(followups=["ok", "{{ item['hint'] }}"])
    assert message.startswith("exp.yaml: followups[1]: uses item.hint")


def test_check_allows_names_set_inside_the_template() -> None:
    conv = conversation(
        followups=["{% set x = item.prompt %}{% for t in turns %}{{ x }}{% endfor %}"]
    )
    conv.check([ITEM])


def test_syntax_error_names_the_template_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        conversation(followups=["fine", "line one\nline two\n{% if %}"])
    message = str(info.value)
    assert message.startswith("exp.yaml: followups[1]: template syntax error, line 3")


def test_unclosed_expression_in_a_message_names_it() -> None:
    with pytest.raises(
        ConfigError, match=r"exp\.yaml: messages\[0\]\.content: template syntax error, line 1"
    ):
        conversation(messages=[{"role": "user", "content": "{{ item.prompt "}])


def test_unknown_filter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"messages\[0\]\.content"):
        conversation(messages=[{"role": "user", "content": "{{ item.prompt | nosuchfilter }}"}])


# ---------------------------------------------------------------- the sandbox


def assert_no_python_internals(source: str, ctx: dict[str, Any]) -> None:
    """Rendering either raises a TrialrunError or gives text with no Python object in it."""
    try:
        out = Template(source, "exp.yaml: messages[0].content").render(ctx)
    except TrialrunError:
        return
    for leak in ("<class", "<function", "<built-in", "<module", "<bound method", "__builtins__"):
        assert leak not in out, out


ESCAPES = [
    "{{ item.__class__.__mro__ }}",
    "{{ ''.__class__.__subclasses__() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ item.prompt }}{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ item.prompt.__class__.__base__.__subclasses__() }}",
    "{{ item.prompt.format.__globals__ }}",
    "{{ item.prompt }}{{ cycler.__init__.__globals__ }}",
    "{{ item.prompt }}{{ lipsum.__globals__['os'] }}",
    "{{ item.prompt }}{{ self.__init__.__globals__ }}",
    "{{ grid.__class__.__mro__ }}",
    "{{ '{0.__class__.__mro__}'.format(item) }}{{ item.prompt }}",
    "{{ item | attr('__class__') }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_templates_cannot_reach_python_internals(source: str) -> None:
    assert_no_python_internals(source, context())


@pytest.mark.parametrize(
    "source",
    [
        "{{ item.__class__.__mro__ }}",
        "{{ item.prompt.__class__ }}",
        "{{ item.prompt }}{{ cycler.__init__.__globals__ }}",
        "{{ '{0.__class__}'.format(item) }}{{ item.prompt }}",
    ],
)
def test_unsafe_attribute_access_raises_a_trialrun_error(source: str) -> None:
    with pytest.raises(TrialrunError, match=r"messages\[0\]\.content: cannot render"):
        Template(source, "exp.yaml: messages[0].content").render(context())


def test_dunder_item_field_is_rejected_before_running() -> None:
    message = check_error(messages=[{"role": "user", "content": "{{ item.__class__.__mro__ }}"}])
    assert "uses item.__class__" in message


def test_templates_cannot_mutate_the_item_or_the_history() -> None:
    item = dict(ITEM)
    history = [{"user": "u", "response": "r"}]
    ctx = context(item=item, turns=history)
    for source in [
        "{{ item.update({'prompt': 'hacked'}) }}",
        "{{ turns.append(1) }}",
        "{{ item.pop('n') }}",
    ]:
        with pytest.raises(TrialrunError):
            Template(source, "w").render(ctx)
    assert item == ITEM
    assert history == [{"user": "u", "response": "r"}]


@pytest.mark.parametrize(
    "source",
    [
        "{{ item.n / 0 }}",
        "{{ (item.prompt | length) // 0 }}",
        "{{ item.n }}{{ range(10 ** 9) | list | length }}",
    ],
)
def test_runtime_errors_in_a_template_are_trialrun_errors(source: str) -> None:
    """A template that fails while rendering must fail the trial with a message, not crash the run."""
    with pytest.raises(TrialrunError, match=r"messages\[1\]\.content"):
        Template(source, "exp.yaml: messages[1].content").render(context())


def test_optional_fields_and_method_calls_are_not_required_of_every_item() -> None:
    experiment = Experiment.model_validate(
        base_config(
            messages=[
                {
                    "role": "user",
                    "content": "{% if item.hint is defined %}{{ item.hint }} {% endif %}"
                    "{{ item.get('note', '') }}{{ item.prompt }}",
                }
            ],
            followups=[],
        )
    )
    conversation = Conversation(experiment, "exp.yaml")
    items = [{"id": "a", "prompt": "P?", "hint": "H."}, {"id": "b", "prompt": "Q?"}]
    conversation.check(items)
    assert conversation.first_messages({"item": items[0]})[0]["content"] == "H. P?"
    assert conversation.first_messages({"item": items[1]})[0]["content"] == "Q?"


# ---------------------------------------------------------------- the shape of turns


@pytest.mark.parametrize(
    "followup",
    [
        "{{ turns[-1].respnse }}",
        "{{ turns[0]['answer'] }}",
        "{% for t in turns %}{{ t.text }}{% endfor %}",
        "{{ (turns | last).reply }}",
        "{% for t in turns | reverse %}{{ t['output'] }}{% endfor %}",
    ],
)
def test_check_rejects_a_field_a_turn_does_not_have(followup: str) -> None:
    message = check_error(followups=[followup])
    assert message.startswith("exp.yaml: followups[0]: a turn has no field")
    assert "a turn has: user, response" in message


def test_check_rejects_a_bad_turn_field_that_only_rendering_reveals() -> None:
    message = check_error(followups=["{% set last = turns[-1] %}{{ last.respnse }}"])
    assert message.startswith("exp.yaml: followups[0]: ")
    assert "respnse" in message
    assert "a turn has: user, response" in message


@pytest.mark.parametrize(
    ("followups", "where", "index"),
    [
        (["{{ turns[1].response }}"], "followups[0]", "turns[1]"),
        (["{{ turns[-2].response }}"], "followups[0]", "turns[-2]"),
        (["Go on.", "{{ turns[5].user }}"], "followups[1]", "turns[5]"),
        (["Go on.", "{{ turns[-3].user }}"], "followups[1]", "turns[-3]"),
    ],
)
def test_check_rejects_an_index_past_the_turns_a_followup_sees(
    followups: list[str], where: str, index: str
) -> None:
    message = check_error(followups=followups)
    assert message.startswith(f"exp.yaml: {where}: {index} does not exist")


def test_check_rejects_turns_in_the_first_messages() -> None:
    message = check_error(messages=[{"role": "user", "content": "{{ turns[-1].response }}"}])
    assert message.startswith("exp.yaml: messages[0].content: turns[-1] does not exist")
    assert "before any answer" in message


@pytest.mark.parametrize("followup", ["{{ turn.response }}", "{{ turn['user'] }}", "{{ turn[0] }}"])
def test_check_rejects_fields_of_the_turn_number(followup: str) -> None:
    message = check_error(followups=[followup])
    assert message.startswith("exp.yaml: followups[0]: turn is the number of this turn")


def test_check_accepts_every_documented_way_of_reading_turns() -> None:
    followups = [
        "{{ turns[-1].response }} {{ turns[0]['user'] }} {{ turn + 1 }} {{ turns | length }}",
        "{% for t in turns %}{{ t.user | upper }}{{ t['response'] }}{% endfor %}"
        "{{ turns[1].response.split() | first }}{{ turns[-2].get('user') }}{{ turns[:5] }}",
    ]
    conv = conversation(followups=followups)
    conv.check([ITEM])
    history = [{"user": "u1", "response": "a b"}, {"user": "u2", "response": "c"}]
    assert conv.followup(1, context(turns=history))["content"].startswith("U1a bU2c")


def test_a_bad_turn_field_stops_plan_and_run_before_anything_is_written(
    write_config: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    path = write_config(followups=["You said {{ turns[-1].respnse }}"])
    for command in ("plan", "run"):
        result = cli(command, str(path))
        assert result.code == 2
        assert result.err.splitlines() == [
            f"trialrun: error: {path}: followups[0]: a turn has no field 'respnse' "
            "(a turn has: user, response)"
        ]
    assert not Path("runs").exists()


# ---------------------------------------------------------------- the rendering budget

NESTED = "{% for i in range(N) %}{% for j in range(N) %}{% endfor %}{% endfor %}{{ item.prompt }}"


@pytest.mark.parametrize(
    "source",
    [
        NESTED.replace("N", "100000"),
        "{% set s = item.prompt * 1000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{{ item.prompt * 100 }}{% endfor %}",
        "{{ 'x' * 10 ** 9 }}",
        "{{ [0] * 10 ** 9 }}",
        "{{ item.n ** 100000000 }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ '%0999999999d' | format(1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ item.prompt | center(10 ** 9) }}",
        "{{ item.prompt.ljust(10 ** 9) }}",
        "{{ [1] | batch(10 ** 9, 0) | list }}",
        "{{ (item.prompt * 1000).replace('', item.prompt * 1000) }}",
        "{{ (item.prompt * 1000) | join(item.prompt * 1000) }}",
        "{{ range(100000) | map('string') | join(item.prompt * 50) }}",
        "{{ (item.prompt * 50).join(range(100000) | map('string')) }}",
        "{{ lipsum(10 ** 6) }}",
    ],
)
def test_a_template_over_the_rendering_budget_fails_fast_with_its_name(source: str) -> None:
    start = time.monotonic()
    with pytest.raises(
        TrialrunError, match=r"^exp.yaml: messages\[1\]\.content: template exceeded"
    ):
        Template(source, "exp.yaml: messages[1].content").render(context())
    assert time.monotonic() - start < 1.5


def test_recursion_without_loops_stops_at_the_deadline() -> None:
    source = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    )
    start = time.monotonic()
    with pytest.raises(TrialrunError, match=r"rendering budget \(it ran for over 2 s\)"):
        Template(source, "w").render(context())
    assert time.monotonic() - start < 3


def test_work_within_the_budget_renders_as_before() -> None:
    source = (
        "{% for i in range(900) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
        "{{ 'ab' * 3 }} {{ 2 ** 64 }} {{ '%05d' % 42 }} {{ 'x' | center(5) }}|{{ '{:>4}'.format(7) }}"
    )
    assert Template(source, "w").render(context()) == "ababab 18446744073709551616 00042   x  |   7"


def test_a_template_over_budget_on_the_first_item_fails_at_load() -> None:
    message = check_error(followups=[NESTED.replace("N", "100000")])
    assert message.startswith("exp.yaml: followups[0]: template exceeded the rendering budget")


def budget_config(write_config: Callable[..., Path], slow_n: int, items: int) -> Path:
    """A config whose first message loops n² times, n from the item: the first item is cheap."""
    rows = [{"id": f"q{i}", "prompt": f"P{i}?", "n": 1 if i == 0 else slow_n} for i in range(items)]
    return write_config(
        dataset={"items": rows},
        messages=[{"role": "user", "content": NESTED.replace("N", "item.n")}],
        followups=[],
    )


def test_run_with_a_runaway_template_fails_that_trial_and_finishes(
    tmp_path: Path, write_config: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    config = budget_config(write_config, 100_000, 2)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "trialrun", "run", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert time.monotonic() - start < 30, proc.stderr
    run_dir = only_run(tmp_path / "runs")
    records = {(r["item_id"], r["model"], json.dumps(r["grid"])): r for r in read_results(run_dir)}
    failed = [r for r in records.values() if r["error"]]
    assert len(records) == 8 and {r["item_id"] for r in failed} == {"q1"} and len(failed) == 4
    assert all(
        "messages[0].content: template exceeded the rendering budget" in r["error"] for r in failed
    )

    resumed = cli("resume", str(run_dir))
    assert read_results(run_dir) == list(records.values()), resumed.err
    counts = status_counts(cli("status", str(run_dir)).out)
    assert (counts["pending"], counts["done"], counts["failed"]) == (0, 4, 4)


def status_counts(text: str) -> dict[str, int]:
    """The counts by state from `trialrun status`'s table, by column name."""
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    values = next(line for line in text.splitlines() if line.startswith("│"))
    names = re.findall(r"[a-z]+", header)
    return dict(zip(names, map(int, re.findall(r"\d+", values.replace(",", ""))), strict=True))


@pytest.mark.parametrize("slow_n", [950, 100_000], ids=["within-budget", "over-budget"])
def test_sigint_while_templates_render_stops_the_run_within_seconds(
    tmp_path: Path, write_config: Callable[..., Path], cli: Callable[..., Any], slow_n: int
) -> None:
    config = budget_config(write_config, slow_n, 200)
    proc = trialrun_subprocess("run", str(config), cwd=tmp_path)
    deadline = time.monotonic() + 30
    while not list((tmp_path / "runs").glob("*/trialrun.db")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # well into the slow renders
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - sent < 5
    counts = status_counts(cli("status", str(only_run(tmp_path / "runs"))).out)
    assert counts["pending"] > 0 and counts.get("running", 0) == 0
