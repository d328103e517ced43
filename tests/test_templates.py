"""Unit tests of templates.py: rendering, the plain-field fast path, checks, and the sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conftest import base_config
from trialrun.config import Experiment, validate
from trialrun.errors import ConfigError, TrialrunError
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
    items = [ITEM, {"id": "q2", "prompt": "x", "category": "c"}]
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
