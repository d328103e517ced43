"""Loading: from a config (a YAML file or a dict) and its overrides to a `Prepared`
experiment that passed every check, with nothing written yet.

The steps, in order: read the YAML (`config_yaml`), apply KEY=VALUE overrides
(`overrides`), `validate` into an `Experiment` (one error line naming the key, or the
override that set it), check the models, templates and dataset, and collect the warnings
worth a look before running (a huge plan among them). Run folders are `runs`' business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trialrun.config import PLANNED_KEYS, Experiment, config_warnings
from trialrun.config_keys import clip, unknown_key_hint
from trialrun.config_yaml import read_yaml
from trialrun.dataset import Dataset, load_dataset
from trialrun.errors import ConfigError, unstorable_text
from trialrun.executor.judge import compile_prompt, read_prompt_files
from trialrun.executor.task import load_task
from trialrun.gates import Gates
from trialrun.integrity import check_disjoint
from trialrun.overrides import Overridden, apply_overrides, expand_multirun, override_label
from trialrun.plan import Shard, cell_count, count_trials, expand
from trialrun.provenance import prompt_files
from trialrun.routing import (
    ModelCheck,
    check_budget,
    check_models,
    collapse_warnings,
    graded_mock_answers,
    judge_entries,
)
from trialrun.scoring import Scorers
from trialrun.templates import Conversation, Template
from trialrun.types import Trial
from trialrun.verdicts import VerdictSchema

ConfigSource = str | Path | dict[str, Any]

HUGE_PLAN = 1_000_000
"""Above this many trials, loading warns with the count and the room the run will take."""
TRIAL_ROW_BYTES = 150
"""A planned trial's row in the store (measured: 300k trials, 42.7 MB)."""
DONE_TRIAL_BYTES = 2_800
"""A finished trial with a short answer: store rows and results.jsonl (measured: 6,000
one-turn mock trials, 16.6 MB); long answers take more."""
PROGRESS_EVERY = 10_000
"""`Prepared.progress` hears about every this many trials."""

Progress = Callable[[int, bool], None]
"""Told (trials so far, finished) while a plan's trials are counted or written."""


@dataclass
class Prepared:
    """A config that passed every check, ready to become a run; nothing written yet."""

    experiment: Experiment
    source: str
    base_dir: Path
    dataset: Dataset
    conversation: Conversation
    mock: bool = False
    shard: Shard | None = None
    limit: int | None = None
    overrides: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What deserves a look before running (printed as `warning: ...` by `plan` and `run`)."""
    models: ModelCheck = field(default_factory=ModelCheck)
    """Keys a real run needs, and each model's provider built offline (see `check_models`)."""
    prompt_files: dict[str, str] = field(default_factory=dict)
    """Judge name -> the prompt file it was read from (manifest.json names and hashes it)."""
    progress: Progress | None = None
    """Set by a display to show the trials being counted or written (a plan can be huge)."""
    _by_model: dict[str, int] | None = field(default=None, repr=False)

    @property
    def expected_trials(self) -> int:
        """The trial count without walking the plan: exact unless sharded (then 1/N of all)."""
        total = count_trials(self.experiment, len(self.dataset))
        if self.shard is not None:
            total = -(-total // self.shard.count)
        return total if self.limit is None else min(total, self.limit)

    @property
    def trial_count(self) -> int:
        return sum(self.trials_by_model().values())

    def trials_by_model(self) -> dict[str, int]:
        """Trials per model label: multiplied out, or with a shard or limit, counted by walking
        the plan once (memory stays flat; `progress` hears how far it got)."""
        if self._by_model is None:
            labels = [m.label for m in self.experiment.models]
            if self.shard is None and self.limit is None:
                each = self.expected_trials // len(labels)
                self._by_model = dict.fromkeys(labels, each)
            else:
                self._by_model = dict.fromkeys(labels, 0)
                for trial in self.trials():
                    self._by_model[trial.model] += 1
        return dict(self._by_model)

    def trials(self) -> Iterator[Trial]:
        """The planned trials in order, made as they are read; `progress` hears how many."""
        done = 0
        for trial in expand(self.experiment, self.dataset.ids, self.shard, self.limit):
            yield trial
            done += 1
            if self.progress is not None and done % PROGRESS_EVERY == 0:
                self.progress(done, False)
        if self.progress is not None:
            self.progress(done, True)


def load(
    config: ConfigSource,
    overrides: Sequence[str] = (),
    *,
    mock: bool = False,
    shard: Shard | str | None = None,
    limit: int | None = None,
    need_keys: bool = True,
) -> Prepared:
    """Read and check a config, its overrides, dataset and templates; raise one clear error.

    `need_keys=False` (`plan`) reads no key: the ones a real run needs are listed in
    `Prepared.models.keys` instead, set or not."""
    if isinstance(config, dict):
        raw, source, base_dir = config, "config", Path.cwd()
    else:
        path = Path(config)
        raw, source, base_dir = read_yaml(path), str(path), path.resolve().parent
    experiment = validate(apply_overrides(raw, list(overrides)), source)
    prompts = prompt_files(experiment, base_dir)
    experiment = read_prompt_files(experiment, base_dir, source)
    checked = check_models(experiment, mock, source, need_keys=need_keys)
    check_budget(experiment, mock, source)
    Gates(experiment, source)  # a gate's metric and rule, checked now
    conversation = Conversation(experiment, source)
    conversation.check_names()
    scorers = Scorers(experiment, source, experiment.dataset.id)
    if experiment.task is not None:
        load_task(experiment.task, source)  # a bad path: one line now, nothing written
    answers = graded_mock_answers(experiment, mock, source)
    answers += judge_prompts(experiment, source)

    def check_item(item: dict[str, Any], where: str) -> None:
        conversation.check_item(item, where)
        scorers.check_item(item, where)
        for template in answers:
            template.check_fields(item, where)

    dataset = load_dataset(experiment.dataset, base_dir, source, check_item)
    integrity = experiment.integrity
    check_disjoint(
        dataset, integrity.disjoint_from, integrity.fields, experiment.dataset.id, base_dir, source
    )
    if isinstance(shard, str):
        shard = Shard.parse(shard)
    prepared = Prepared(
        experiment, source, base_dir, dataset, conversation, mock, shard, limit, list(overrides)
    )
    prepared.models = checked
    prepared.prompt_files = prompts
    prepared.warnings = _warnings(prepared)
    return prepared


def judge_prompts(experiment: Experiment, source: str) -> list[Template]:
    """Each judge's prompt compiled and its names checked, and its schema parsed: one
    ConfigError line for a bad schema or an unknown name (item fields are checked per item)."""
    prompts = []
    for judge, where in judge_entries(experiment, source):
        VerdictSchema.parse(judge.schema_, where)
        prompts.append(compile_prompt(judge, where, experiment.grid))
    return prompts


def _warnings(prepared: Prepared) -> list[str]:
    experiment, checked = prepared.experiment, prepared.models
    read = set().union(*(t.names for t in prepared.conversation.templates()))
    warnings = [*config_warnings(experiment), *checked.warnings]
    warnings += collapse_warnings(experiment, checked.unsent, read)
    trials = prepared.expected_trials
    if trials > HUGE_PLAN:
        warnings.append(
            f"{experiment.name}: {trials:,} trials; writing the plan takes about "
            f"{_size(trials * TRIAL_ROW_BYTES)} before any call, and the finished run about "
            f"{_size(trials * DONE_TRIAL_BYTES)} (more with long answers); --limit N or "
            "--shard I/N runs a part"
        )
    return warnings


def _size(size: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:,.1f} {unit}".replace(".0 ", " ")
        size /= 1000
    return f"{size:,.1f} TB"


def load_many(
    configs: Sequence[ConfigSource],
    overrides: Sequence[str] = (),
    *,
    multirun: bool = False,
    **options: Any,
) -> list[Prepared]:
    """Several configs, or one config swept over comma-separated override values."""
    combos = expand_multirun(list(overrides)) if multirun else [list(overrides)]
    return [load(config, combo, **options) for config in configs for combo in combos]


def plan_summary(prepared: Prepared) -> dict[str, Any]:
    experiment = prepared.experiment
    by_model = prepared.trials_by_model()
    trials = sum(by_model.values())
    return {
        "name": experiment.name,
        "items": len(prepared.dataset),
        "models": [m.label for m in experiment.models],
        "cells": cell_count(experiment.grid),
        "repeats": experiment.repeats,
        "turns": experiment.turn_count(),
        "trials": trials,
        "requests": trials * experiment.turn_count(),
        "trials_per_model": by_model,
    }


# ------------------------------------------------------------------ validation


def validate(raw: dict[str, Any], source: str) -> Experiment:
    """Validate a raw config dict; errors become one ConfigError line naming the key."""
    for key, what in PLANNED_KEYS.items():
        if key in raw:
            raise ConfigError(
                f"{source}: key '{key}' ({what}) is planned but not in this version of "
                "trialrun yet; remove it"
            )
    invalid = _unstorable_text(raw)
    if invalid:
        key, exc = invalid
        raise ConfigError(f"{source}: key '{key}': {unstorable_text(exc)}")
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        error = _first_error(exc, raw)
        where, note = _blame(raw, error["loc"], source)
        raise ConfigError(f"{where}: {_describe(error)}{note}") from None


def _first_error(exc: ValidationError, raw: dict[str, Any]) -> Any:
    """The error to show, its location as the config spells it: of a union (`judge:` is one
    judge or a list), the member the value's shape chose, with pydantic's member tag
    (`JudgeConfig`, `list[JudgeConfig]`) left out of the location."""
    errors = exc.errors()
    for error in errors:
        loc = tuple(error["loc"])
        tags = [part for part in loc if isinstance(part, str) and "JudgeConfig" in part]
        if not tags:
            return error
        as_list = isinstance(raw.get("judge"), list)
        if tags[0].startswith("list[") == as_list:
            return {**error, "loc": tuple(p for p in loc if p not in tags)}
    return errors[0]


def _blame(raw: dict[str, Any], loc: tuple[Any, ...], source: str) -> tuple[str, str]:
    """(where, note): the override that set the failing key (the last, if several did), else
    the overrides when the config is valid without them, else the config file."""
    if not isinstance(raw, Overridden) or not raw.setters:
        return source, ""
    parts = tuple(str(part) for part in loc)
    for setter in reversed(raw.setters):
        if parts[: len(setter.path)] == setter.path:
            note = "; the value is not valid YAML, so it was read as text" if setter.as_text else ""
            return override_label(setter.text), note
    try:
        Experiment.model_validate(raw.base)
    except ValidationError:
        return source, ""
    texts = ", ".join(f"'{clip(setter.text)}'" for setter in raw.setters)
    plural = "s" if len(raw.setters) > 1 else ""
    return f"{source} with override{plural} {texts}", ""


def _unstorable_text(data: Any) -> tuple[str, UnicodeEncodeError] | None:
    """(dotted key, the error) of the first text that cannot be UTF-8: a lone surrogate,
    from a YAML escape such as "\\ud800" or an argument that was not UTF-8."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{key}.{k}".lstrip("."), v) for k, v in value.items())
            stack.extend((f"{key}.{k}".lstrip("."), k) for k in value if isinstance(k, str))
        elif isinstance(value, list):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, str) and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError as exc:
                return key or "(top level)", exc
    return None


def _describe(error: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{clip(key)}'{unknown_key_hint(loc[:-1], loc[-1])}"
    if error["type"] == "missing":
        return f"key '{key}' is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not loc:
        return message
    got = error.get("input")
    # A rejected literal key (or a URL holding one) must not reach a terminal or a log.
    secret = loc[-1] in ("api_key", "base_url")
    hidden = secret or isinstance(got, dict | list) or got is None
    shown = "" if hidden else f" (got {clip(repr(got))})"
    return f"key '{key}': {message}{shown}"
