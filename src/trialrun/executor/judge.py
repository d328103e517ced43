"""LLM judges: one more stage of the trial path, through the same limiter, retry, cache and
store as the trials.

A judge reads a done trial's record (item, grid values, turns, final response, scores),
renders its prompt, asks its model for a verdict in the judge's schema through the
provider's own structured output (`structured: native`) or by asking for JSON in the
prompt (`structured: prompt`), and validates the reply (`verdicts.py`). A reply that is
not a valid verdict is asked again with the reason quoted, `reasks` times at most; a
refusal, a cut-off reply or a failed call is not asked again. Whatever happens, the trial
gets exactly one outcome per judge: a verdict, or a `judge_error` saying why there is
none. Never a guess, never a default.

What lives here does not depend on how a request reaches the provider: the executors
supply `Ask` (real time: one call with cache, limits and retries; batch mode: a line of a
batch), and this module turns replies into `JudgmentRow`s and records' verdict fields.

Record shape (DESIGN.md): `judge`/`judge_error` hold the first judge's outcome, `judges`
and `judge_errors` every judge's by name; a trial not judged yet has both null.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from trialrun.config import PROMPT_FILE_SUFFIXES, Experiment, JudgeConfig
from trialrun.errors import ConfigError, TrialrunError
from trialrun.executor.cache import cache_key
from trialrun.executor.trial import ExperimentRun, ModelRoute, TurnRequest, last_user
from trialrun.hashing import canonical, content_hash
from trialrun.store import JUDGE_TURN, JudgmentRow, utcnow
from trialrun.store.judgments import JudgeSpend
from trialrun.templates import Template
from trialrun.types import Response
from trialrun.verdicts import VerdictError, VerdictField, VerdictSchema, extract_json

TRUNCATED = frozenset({"length", "max_tokens", "MAX_TOKENS"})
"""Finish reasons of a reply cut off by its token limit."""
FILTERED = frozenset({"content_filter", "SAFETY", "refusal", "PROHIBITED_CONTENT"})
"""Finish reasons of a reply a provider withheld: a refusal."""
JUDGE_NAMES = frozenset(
    {"item", "grid", "turns", "response", "scores", "model", "repeat", "seed", "judge", "output"}
)
"""The names a judge's prompt may read, beside the grid values by name."""


# ------------------------------------------------------------------ the judges of a run


@dataclass
class Judge:
    """One judge, compiled: its route, prompt template, schema and spec hash."""

    config: JudgeConfig
    route: ModelRoute
    prompt: Template
    schema: VerdictSchema
    spec_hash: str
    primary: bool
    """The first judge: its outcome is also the record's `judge`/`judge_error`."""

    @property
    def name(self) -> str:
        return self.config.label

    @property
    def params(self) -> dict[str, Any]:
        """The params sent: the judge's (temperature 0 by default) less the unsent."""
        return {k: v for k, v in self.config.sent_params().items() if k not in self.route.unsent}

    @property
    def response_schema(self) -> dict[str, Any] | None:
        """The JSON Schema sent as structured output; None when it is asked in the prompt."""
        return self.schema.json_schema() if self.config.structured == "native" else None


def spec_hash(config: JudgeConfig) -> str:
    """12 hex digits naming a judge's spec: verdicts from two specs are never mixed."""
    return content_hash(config.spec())[:12]


def compile_prompt(config: JudgeConfig, where: str, grid: Iterable[str]) -> Template:
    """The judge's prompt template, its names checked (one ConfigError line)."""
    template = Template(config.prompt, f"{where}.prompt")
    unknown = template.names - JUDGE_NAMES - set(grid)
    if unknown:
        raise ConfigError(
            f"{where}.prompt: unknown name '{sorted(unknown)[0]}' (a judge's prompt reads "
            "item.<field>, grid values by name, turns, response, scores, output, model, repeat, "
            "seed)"
        )
    return template


def compile_judges(
    experiment: Experiment, routes: dict[str, ModelRoute], source: str = ""
) -> list[Judge]:
    """The experiment's judges with their routes (by judge name; see routing)."""
    judges = []
    listed = isinstance(experiment.judge, list)
    prefix = f"{source}: " if source else ""
    for index, config in enumerate(experiment.judges()):
        where = f"{prefix}judge[{index}]" if listed else f"{prefix}judge"
        judges.append(
            Judge(
                config,
                routes[config.label],
                compile_prompt(config, where, experiment.grid),
                VerdictSchema.parse(config.schema_, where),
                spec_hash(config),
                primary=index == 0,
            )
        )
    return judges


def read_prompt_files(experiment: Experiment, base_dir: Path, source: str) -> Experiment:
    """`experiment` with each judge's prompt file (a prompt of one line, no template marks,
    ending in .md, .txt, .j2, .jinja, .jinja2 or .prompt) replaced by the file's text, read
    now from beside the config, so the run keeps the prompt itself."""
    if experiment.judge is None:
        return experiment
    listed = experiment.judge if isinstance(experiment.judge, list) else [experiment.judge]
    read = []
    for index, config in enumerate(listed):
        prompt = config.prompt.strip()
        where = f"judge[{index}].prompt" if isinstance(experiment.judge, list) else "judge.prompt"
        if is_prompt_file(prompt):
            path = base_dir / prompt
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ConfigError(
                    f"{source}: {where}: no prompt file {path} (a prompt of one line ending "
                    f"in {', '.join(PROMPT_FILE_SUFFIXES)} is read from beside the config)"
                ) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{source}: {where}: cannot read {path}: {exc}") from None
            config = config.model_copy(update={"prompt": text})
        read.append(config)
    judge: Any = read if isinstance(experiment.judge, list) else read[0]
    return experiment.model_copy(update={"judge": judge})


def is_prompt_file(prompt: str) -> bool:
    return (
        "\n" not in prompt
        and not any(mark in prompt for mark in ("{{", "{%", "{#"))
        and prompt.lower().endswith(PROMPT_FILE_SUFFIXES)
    )


# ------------------------------------------------------------------ what a judge reads


def judge_context(
    run: ExperimentRun, record: dict[str, Any], history: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """What a judge's prompt sees: the item (id included), grid values, the turns (each
    `{user, response}`), the last `response`, `scores`, a custom trial's `output` (None
    for other trials), and the graded `model`, which a prompt shows only if it asks for
    it. `history` is the trial's turns when the caller has them; otherwise the user
    messages are rendered again from the templates (a task's turns carry their own)."""
    item = {run.id_field: record["item_id"], **record["item"]}
    grid = record["grid"]
    context: dict[str, Any] = {
        "item": item,
        "grid": grid,
        **grid,
        "model": record["model"],
        "repeat": record["repeat"],
        "seed": record["seed"],
        "turn": 1,
        "turns": [],
    }
    turns = history if history is not None else _history(run, record, dict(context))
    responses = [turn["response"] for turn in record["turns"]]
    context["turns"] = turns
    context["response"] = responses[-1] if responses else ""
    context["scores"] = record.get("scores") or {}
    context["output"] = record.get("output")
    return context


def _history(
    run: ExperimentRun, record: dict[str, Any], context: dict[str, Any]
) -> list[dict[str, str]]:
    """The trial's turns as `{user, response}`, its user messages rendered again as the
    trial rendered them (a template that fails now leaves that user message empty)."""
    history: list[dict[str, str]] = []
    if record["turns"] and all("user" in turn for turn in record["turns"]):  # a task's calls
        return [{"user": t["user"], "response": t["response"]} for t in record["turns"]]
    try:
        messages = run.conversation.first_messages(context)
    except TrialrunError:
        messages = []
    for index, turn in enumerate(record["turns"]):
        if index:
            context["turn"], context["turns"] = index + 1, history
            try:
                messages = [*messages, run.conversation.followup(index - 1, context)]
            except (TrialrunError, IndexError):
                messages = [*messages, {"role": "user", "content": ""}]
        history = [*history, {"user": last_user(messages), "response": turn["response"]}]
        messages = [*messages, {"role": "assistant", "content": turn["response"]}]
    return history


def judge_messages(judge: Judge, context: dict[str, Any]) -> list[dict[str, str]]:
    """The judge's first ask: its rendered prompt as one user message (with the verdict's
    fields spelt out when the schema is asked for in the prompt)."""
    text = judge.prompt.render(context)
    if judge.config.structured == "prompt":
        text = f"{text}\n\n{json_instructions(judge.schema)}"
    return [{"role": "user", "content": text}]


def json_instructions(schema: VerdictSchema) -> str:
    """What a prompt-asked verdict must look like, field by field."""
    lines = [f"- {f.name}: {_describe(f)}" for f in schema.fields]
    return (
        "Reply with only a JSON object with exactly these fields, nothing before or after it:\n"
        + "\n".join(lines)
    )


def _describe(field_: VerdictField) -> str:
    if field_.kind == "enum":
        return "one of " + ", ".join(orjson.dumps(c).decode() for c in field_.choices)
    if field_.kind == "bool":
        return "true or false"
    if field_.kind == "str":
        return "a string"
    kind = "an integer" if field_.kind == "int" else "a number"
    low, high = field_.minimum, field_.maximum
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if low is not None:
        return f"{kind} of at least {low}"
    if high is not None:
        return f"{kind} of at most {high}"
    return kind


def judge_request(judge: Judge, trial_id: str, messages: list[dict[str, str]]) -> TurnRequest:
    """Key and JSON of one ask. The key holds all a verdict depends on (provider, model,
    endpoint, options, messages, params and the schema), so a changed schema or prompt is
    never answered from the cache; two trials with the same response share one verdict."""
    route, schema = judge.route, judge.response_schema
    model_id = route.config.model_id
    keyed = {**route.options, "$schema": schema, "$structured": judge.config.structured}
    key = cache_key(
        route.provider_name, model_id, route.base_url, keyed, messages, judge.params, 0, JUDGE_TURN
    )
    body = {
        "judge": judge.name,
        "model": model_id,
        "messages": messages,
        "params": judge.params,
        "schema": schema,
    }
    return TurnRequest(trial_id, JUDGE_TURN, key, canonical(body), route.options)


# ------------------------------------------------------------------ reading a reply


@dataclass(frozen=True, slots=True)
class Reading:
    """What one reply came to: a verdict, or an error and whether asking again may help."""

    verdict: dict[str, Any] | None
    error: str | None = None
    kind: str | None = None
    """parse (not JSON), schema (JSON that does not fit), refusal, truncated, api."""
    reask: bool = False


def read_reply(judge: Judge, response: Response) -> Reading:
    """Validate a reply against the judge's schema; never a guess, never a default."""
    if response.refusal is not None:
        return Reading(None, f"the judge refused: {response.refusal}", "refusal")
    try:
        value = extract_json(response.text)
    except VerdictError as exc:
        return _invalid(response, f"not a JSON verdict: {exc}", "parse")
    try:
        return Reading(judge.schema.validate(value))
    except VerdictError as exc:
        return _invalid(response, f"the verdict does not fit the schema: {exc}", "schema")


def _invalid(response: Response, reason: str, kind: str) -> Reading:
    finish = response.finish_reason or ""
    if finish in TRUNCATED:
        return Reading(
            None,
            f"the verdict was cut off at the token limit (finish_reason {finish}); raise the "
            "judge's params.max_tokens",
            "truncated",
        )
    if finish in FILTERED:
        return Reading(None, f"the judge's reply was withheld (finish_reason {finish})", "refusal")
    return Reading(None, reason, kind, reask=True)


def reask_messages(messages: list[dict[str, str]], reply: str, reason: str) -> list[dict[str, str]]:
    """The next ask after an invalid verdict: the reply and why it is not valid."""
    return [
        *messages,
        {"role": "assistant", "content": reply},
        {
            "role": "user",
            "content": f"That reply is not a valid verdict ({reason}). Reply again with only "
            "the verdict: one JSON object with exactly the fields asked for.",
        },
    ]


# ------------------------------------------------------------------ judging one trial

Ask = Callable[[Judge, TurnRequest, list[dict[str, str]]], Awaitable["Answer"]]
"""How an executor sends one ask: (judge, request, messages) -> Answer."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An executor's answer to one ask: a response, or the error after its retries."""

    response: Response | None
    error: str | None
    attempts: int


@dataclass
class _Tally:
    """Usage, cost and latency over every ask of one judgment."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = 0.0
    latency_s: float = 0.0
    attempts: int = 0
    asks: int = 0
    cache_hits: int = 0
    last: Response | None = None
    request: str = ""
    started_at: str = field(default_factory=utcnow)

    def add(self, request: TurnRequest, answer: Answer) -> None:
        self.asks += 1
        self.attempts += answer.attempts
        self.request = request.json
        response = answer.response
        if response is None:
            return
        self.last = response
        self.input_tokens += response.usage.input
        self.output_tokens += response.usage.output
        self.latency_s += response.latency_s
        self.cache_hits += int(response.cache_hit)
        if self.cost is not None:
            self.cost = None if response.cost_usd is None else self.cost + response.cost_usd


async def judge_trial(
    judge: Judge, trial_id: str, context: dict[str, Any], ask: Ask
) -> JudgmentRow:
    """One judge's judgment of one trial: asks until a valid verdict, a final error, or
    `reasks` re-asks spent."""
    tally = _Tally()
    try:
        messages = judge_messages(judge, context)
    except TrialrunError as exc:  # the prompt failed to render for this trial
        return _row(judge, trial_id, tally, None, Reading(None, str(exc), "prompt"))
    for number in range(judge.config.reasks + 1):
        request = judge_request(judge, trial_id, messages)
        answer = await ask(judge, request, messages)
        tally.add(request, answer)
        if answer.response is None:
            return _row(judge, trial_id, tally, None, Reading(None, answer.error, "api"))
        reading = read_reply(judge, answer.response)
        if reading.verdict is not None or not reading.reask:
            return _row(judge, trial_id, tally, answer.response, reading)
        if number == judge.config.reasks:
            asks = f"{tally.asks} ask{'s' if tally.asks > 1 else ''}"
            final = Reading(None, f"no valid verdict after {asks}: {reading.error}", reading.kind)
            return _row(judge, trial_id, tally, answer.response, final)
        messages = reask_messages(messages, answer.response.text, reading.error or "")
    raise AssertionError("unreachable: the loop returns on its last ask")


def _row(
    judge: Judge, trial_id: str, tally: _Tally, response: Response | None, reading: Reading
) -> JudgmentRow:
    last = response or tally.last
    done = reading.verdict is not None
    return JudgmentRow(
        trial_id,
        judge.name,
        judge.spec_hash,
        "done" if done else "failed",
        canonical(reading.verdict) if done else None,
        None if done else (reading.error or "no verdict"),
        None if done else reading.kind,
        last.text if last is not None else None,
        tally.request or canonical({"judge": judge.name}),
        canonical(last.to_json()) if last is not None else None,
        tally.input_tokens,
        tally.output_tokens,
        0.0 if judge.route.provider_name == "mock" else tally.cost,
        round(tally.latency_s, 6),
        tally.attempts,
        tally.asks,
        tally.asks > 0 and tally.cache_hits == tally.asks,
        tally.started_at,
        utcnow(),
    )


# ------------------------------------------------------------------ batch mode's asks


def after_reply(judge: Judge, reading: Reading, asks: int) -> Reading | None:
    """What a reply read after `asks` asks comes to, as in `judge_trial`: the final
    reading, or None when it is to be asked again (an invalid verdict, re-asks left)."""
    if reading.verdict is not None or not reading.reask:
        return reading
    if asks <= judge.config.reasks:
        return None
    noun = f"{asks} ask{'s' if asks > 1 else ''}"
    return Reading(None, f"no valid verdict after {noun}: {reading.error}", reading.kind)


def asks_of(messages: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """The messages of each ask that led to `messages`: the first ask's prompt, then one
    more reply and reason per re-ask (`reask_messages`)."""
    replies = sum(1 for message in messages if message["role"] == "assistant")
    return [messages[: 2 * k + 1] for k in range(replies + 1)]


def spent_row(
    judge: Judge,
    trial_id: str,
    spend: JudgeSpend,
    asks: int,
    request_json: str,
    response: Response | None,
    reading: Reading,
) -> JudgmentRow:
    """A judgment whose asks went out one by one (batch mode): its usage and cost as the
    store summed them over the asks' attempts, the last reply and what it came to."""
    tally = _Tally(
        spend.input_tokens,
        spend.output_tokens,
        spend.cost_usd,
        spend.latency_s,
        spend.calls,
        asks,
        spend.cache_hits,
        response,
        request_json,
        spend.started_at or utcnow(),
    )
    return _row(judge, trial_id, tally, response, reading)


# ------------------------------------------------------------------ verdicts in records


def outcome(row: JudgmentRow) -> tuple[Any, str | None]:
    """(verdict or None, error or None) of a judgment, as a record shows it."""
    return (orjson.loads(row.verdict) if row.verdict else None, row.error)


def apply_verdicts(
    record: dict[str, Any], judges: list[Judge], rows: Iterable[JudgmentRow]
) -> dict[str, Any]:
    """`record` (changed in place, and returned) with each judgment in `judges`/
    `judge_errors` by name, the first judge's also in `judge`/`judge_error`; every judge of
    `judges` has an entry (null and null: not judged yet)."""
    verdicts = dict(record.get("judges") or {})
    errors = dict(record.get("judge_errors") or {})
    for judge in judges:
        verdicts.setdefault(judge.name, None)
        errors.setdefault(judge.name, None)
    for row in rows:
        verdicts[row.judge], errors[row.judge] = outcome(row)
    record["judges"], record["judge_errors"] = verdicts, errors
    primary = next((j.name for j in judges if j.primary), None)
    if primary is not None:
        record["judge"], record["judge_error"] = verdicts[primary], errors[primary]
    return record
