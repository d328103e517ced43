"""The experiment config: its pydantic models, what they refuse, and the warnings they give.

Every field carries a docstring; the config reference in docs/reference.md is generated
from them, so the docs cannot drift from the code. The key paths the models allow (unknown
keys, "did you mean") are in `config_keys`, reading YAML in `config_yaml`, KEY=VALUE
overrides and sweeps in `overrides`, and turning a raw dict into an `Experiment` with
one-line errors in `loading.validate`.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trialrun import secrets

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_NAME_LENGTH = 100
"""A run folder is named `<name>-<YYYYmmdd-HHMMSS>-<4 hex>` (`.<...>.tmp` while written):
126 bytes at most, well under the 255 of most file systems (143 under eCryptfs)."""
RESERVED_TEMPLATE_NAMES = frozenset({"item", "grid", "turn", "turns", "model", "repeat", "seed"})
SAMPLING_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "seed",
        "stop",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "n",
        "min_p",
        "repetition_penalty",
    }
)
PLANNED_KEYS: dict[str, str] = {}
"""Top-level keys reserved for a later version (name -> what they will do): refused with
a note that they are planned rather than as unknown keys."""
TASK_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class SampleConfig(StrictModel):
    """A seeded random sample of the dataset's items, stratified on request."""

    n: int = Field(ge=1)
    """Items to draw (all of them when the dataset has no more than N)."""
    stratify: str | None = None
    """Item field whose values are the strata (`category`); none: a simple random sample."""
    seed: int = 0
    """Seed of the draw: the same dataset, n and seed give the same items on any machine."""
    allocation: Literal["proportional", "equal"] = "proportional"
    """`proportional`: each stratum's share of N follows its share of the items (largest-remainder rounding); `equal`: N split evenly, a stratum smaller than its share gives every item and the rest goes to the others."""


class DatasetConfig(StrictModel):
    path: str | None = None
    """JSON list, JSONL or CSV file of items; relative paths start at the config file's folder."""
    items: list[dict[str, Any]] | None = None
    """Items written inline in the config instead of a file."""
    id: str = "id"
    """Field holding each item's id; ids must be unique."""
    limit: int | None = Field(default=None, ge=1)
    """Use only the first N items."""
    format: Literal["json", "jsonl", "csv"] | None = None
    """File format; by default taken from the file's extension."""
    sample: SampleConfig | None = None
    """Draw a seeded (optionally stratified) random sample of the items instead of the first N (`{n: 800, stratify: category, seed: 1}`); recorded in manifest.json."""

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if (self.path is None) == (self.items is None):
            raise ValueError("give exactly one of 'path' (a file) or 'items' (inline rows)")
        if self.limit is not None and self.sample is not None:
            raise ValueError("give 'limit' (the first N items) or 'sample' (a random N), not both")
        return self


class ModelConfig(StrictModel):
    model: str = Field(pattern=r"^[A-Za-z0-9_-]+/.+$")
    """`provider/model-id`, e.g. `openai/gpt-4o-mini` or `mock/alpha`."""
    name: str | None = None
    """Label used in trial ids and reports; defaults to `model`. Needed when one model appears twice."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Sampling params for this model; they override the top-level `params`."""
    base_url: str | None = None
    """Endpoint for OpenAI-compatible servers; may hold `${env:NAME}`."""
    api_key: str | None = None
    """Only as a reference, `${env:NAME}`: secrets never go in a config."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Provider-specific settings that are not sampling params."""

    @field_validator("api_key")
    @classmethod
    def _key_is_reference(cls, value: str | None) -> str | None:
        if value is not None and not ENV_REF.fullmatch(value):
            raise ValueError("write the key as a reference, api_key: ${env:NAME}, never the key")
        return value

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        if value is not None and secrets.url_credentials(value):
            raise ValueError(
                "holds credentials (user:password@); they would be written in clear: write "
                "them as references, e.g. https://${env:USER}:${env:PASS}@host, or the whole "
                "base_url as ${env:NAME}"
            )
        return value

    @field_validator("params", "options")
    @classmethod
    def _no_secret_values(cls, value: dict[str, Any]) -> dict[str, Any]:
        refuse_secrets(value)
        return value

    @property
    def label(self) -> str:
        return self.name or self.model

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def model_id(self) -> str:
        return self.model.split("/", 1)[1]


PROMPT_FILE_SUFFIXES = (".md", ".txt", ".j2", ".jinja", ".jinja2", ".prompt")
"""A judge `prompt` of one line, without `{{`/`{%`, ending in one of these is a file name."""
JUDGE_DEFAULT_PARAMS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 1024}


class JudgeConfig(ModelConfig):
    """An LLM judge: a model given as under `models:`, a prompt and the verdict's schema."""

    prompt: str
    """The judge's prompt: a Jinja template over `item`, `grid` (and each grid value), `turns` (each `{user, response}`), `response` (the last turn's answer), `scores` and `model` (the graded model's name appears only if the template asks for it); or a file next to the config (one line ending in .md, .txt, .j2, .jinja, .prompt), read at load and kept in the run."""
    schema_: dict[str, Any] = Field(alias="schema")
    """The verdict's fields: `[pass, fail]` (a choice of two or more), `bool`, `str`, `int`, `float`, `{type: int, min: 1, max: 5}`. Every field is required; a reply that does not fit is asked again, then left as a judge_error."""
    when: Literal["online", "after"] = "online"
    """`online` judges each trial as soon as it is done, beside the sweep; `after` once every trial is done (or by `trialrun judge`)."""
    structured: Literal["native", "prompt"] = "native"
    """`native` asks through the provider's structured output (OpenAI json_schema, Anthropic forced tool, Gemini responseSchema); `prompt` appends the schema to the prompt and extracts the JSON from the reply, for servers without structured output."""
    reasks: int = Field(default=2, ge=0, le=10)
    """Times a reply that is not a valid verdict is asked again (the reason quoted) before the trial gets a judge_error."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, populate_by_name=True
    )

    @property
    def label(self) -> str:
        return self.name or "judge"

    def sent_params(self) -> dict[str, Any]:
        """The judge's params: temperature 0 and max_tokens 1024 unless its `params` say."""
        return {**JUDGE_DEFAULT_PARAMS, **self.params}

    def spec(self) -> dict[str, Any]:
        """What a judge's verdicts depend on, hashed to tell two judges of one name apart:
        model, endpoint, options, prompt, schema, params and how the verdict is asked for."""
        return {
            "model": self.model,
            "base_url": self.base_url,
            "options": self.options,
            "prompt": self.prompt,
            "schema": self.schema_,
            "params": self.sent_params(),
            "structured": self.structured,
            "reasks": self.reasks,
        }


def refuse_secrets(value: dict[str, Any]) -> None:
    """A value that looks like a credential in clear (a secret-named option, an `sk-...`)
    would be written to config.yaml, the database and the results: refuse it."""
    found = secrets.find_secret(value, "")
    if found is not None:
        raise ValueError(
            f"'{found.lstrip('.')}' looks like a secret written in clear; it would be stored "
            "with the run: put it in the environment and write ${env:NAME}"
        )


class MessageTemplate(StrictModel):
    role: Literal["system", "user", "assistant"]
    """Who speaks."""
    content: str
    """A Jinja template over `item`, `grid` (and each grid value by name), `turns`, `model`, `repeat`."""


class LimitConfig(StrictModel):
    rpm: float | None = Field(default=None, gt=0)
    """Requests per minute; none means no limit."""
    tpm: float | None = Field(default=None, gt=0)
    """Tokens per minute (input estimate + max_tokens, corrected by reported usage)."""
    concurrency: int | None = Field(default=None, ge=1)
    """Requests in flight at once; defaults to the provider's own default."""
    burst_s: float = Field(default=1.0, gt=0)
    """Seconds of allowance the token buckets hold, so short bursts can go at once."""
    max_response_mb: float = Field(default=32.0, gt=0)
    """Largest response body taken, in MiB; a bigger one fails its attempt (not retried), read no further."""


class RetryConfig(StrictModel):
    attempts: int = Field(default=6, ge=1)
    """Calls per request at most, the first included."""
    max_wait_s: float = Field(default=120.0, ge=0)
    """Longest wait between two attempts; a server's longer Retry-After is capped to it (and noted in the run's events)."""
    base_wait_s: float = Field(default=1.0, ge=0)
    """First backoff step; waits grow as base * 2^n with full jitter, or follow Retry-After."""
    timeout_s: float = Field(default=120.0, gt=0)
    """Per-request timeout; a timeout is retried."""


class CacheConfig(StrictModel):
    enabled: bool = True
    """Reuse responses across runs from the shared response cache."""
    dir: str | None = None
    """Cache folder; default `$TRIALRUN_CACHE_DIR`, else `$XDG_CACHE_HOME/trialrun`, else `~/.cache/trialrun`."""


class MockConfig(StrictModel):
    latency_s: float = Field(default=0.0, ge=0)
    """Mean latency of each mock call."""
    jitter_s: float = Field(default=0.0, ge=0)
    """Uniform jitter added to the latency."""
    errors: dict[Literal["rate_limit", "server", "overloaded", "timeout"], float] = Field(
        default_factory=dict
    )
    """Probability of each injected fault per call: 429 with Retry-After, 500, 529, or a hang."""
    retry_after_s: float = Field(default=0.05, ge=0)
    """Retry-After sent with injected 429s."""
    concurrency: int = Field(default=256, ge=1)
    """Default concurrency of mock models when `limits` names none."""
    batch_delay_s: float = Field(default=0.0, ge=0)
    """Batch mode: seconds from submission until a mock batch has ended."""
    batch_errors: float = Field(default=0.0, ge=0, le=1)
    """Batch mode: probability that a request in a mock batch comes back as an error."""
    batch_expire: float = Field(default=0.0, ge=0, le=1)
    """Batch mode: probability that a request is left unprocessed when its mock batch expires."""
    answer: str | None = None
    """The right answer, a Jinja template over what message templates see (`{{ item.answer }}`); set, mock models answer it exactly with probability `accuracy` (a mock model entry's `options: {answer, accuracy, choices}` overrides these three)."""
    accuracy: float = Field(default=1.0, ge=0, le=1)
    """With `answer` set: how often a mock answers right, decided per request by a hash of the request (the same on every run and machine)."""
    choices: list[str] | None = None
    """With `answer` set: the options of a multiple-choice item; a wrong answer is then another option. Without it a wrong answer to a number is that number plus 1, to anything else `I do not know.`"""


SCORER_KINDS = ("regex", "equals", "includes", "choice", "number", "logprob", "function")


class ScorerConfig(StrictModel):
    """One deterministic scorer: exactly one of the kinds below, with its options."""

    regex: str | None = None
    """True when the response matches this Python regex anywhere (`re.search`)."""
    flags: list[Literal["IGNORECASE", "MULTILINE", "DOTALL"]] = Field(default_factory=list)
    """`regex`: flags of the pattern."""
    equals: str | None = None
    """True when the response equals this template (over `item`, `grid`, `model`, `repeat`, `seed`) once both are normalised: by default case-folded, whitespace runs collapsed to one space and stripped, then Unicode punctuation removed at both ends (the middle is kept)."""
    includes: str | None = None
    """True when the normalised response contains this template's normalised text (normalised as for `equals`)."""
    case: bool = True
    """`equals`/`includes`: `false` keeps case (no case folding)."""
    whitespace: bool = True
    """`equals`/`includes`: `false` keeps whitespace as it is (no collapsing, no stripping)."""
    punctuation: bool = True
    """`equals`/`includes`: `false` keeps punctuation at both ends."""
    choice: list[str] | None = None
    """Option labels (`[A, B, C, D]`); the chosen one is the last label in the response standing alone (no letter or digit on either side, as in `Answer: B` or `(B)`), compared to `target`; none found: null."""
    number: str | None = None
    """True when the last number in the response (an optional `-`, digits with optional thousands commas, an optional decimal part) is within `tol` (or `rel_tol`) of this template's number; none found: null."""
    tol: float = Field(default=0.0, ge=0)
    """`number`: absolute tolerance."""
    rel_tol: float | None = Field(default=None, ge=0)
    """`number`: relative tolerance, also accepted (`math.isclose`)."""
    logprob: list[str] | None = None
    """Option labels; the score is the probability of `target` at the first token position whose top logprobs hold any option (tokens compared stripped), a softmax over the options present there (0 when the target is not among them). Needs `params.top_logprobs`; without logprobs: null."""
    target: str | None = None
    """`choice`/`logprob`: the right option, a template (`{{ item.answer }}`)."""
    function: str | None = None
    """`package.module:fn`, called as fn(item, record) and returning a bool, a number or None (null); imported at load; raising leaves that score null with the error."""
    turn: int | None = Field(default=None, ge=1)
    """Score this turn (1-based) instead of the last; a trial without it: null."""

    @model_validator(mode="after")
    def _one_kind(self) -> ScorerConfig:
        kinds = [kind for kind in SCORER_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            given = f"got {', '.join(kinds)}" if kinds else "got none"
            raise ValueError(f"give exactly one scorer kind of {', '.join(SCORER_KINDS)} ({given})")
        if kinds[0] in ("choice", "logprob") and self.target is None:
            raise ValueError(f"'{kinds[0]}' needs a 'target' (the right option, a template)")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        if self.function is not None and not re.fullmatch(r"[\w.]+:\w+", self.function):
            raise ValueError(f"function {self.function!r}: write it as package.module:fn")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in SCORER_KINDS if getattr(self, kind) is not None)


class BudgetConfig(StrictModel):
    max_usd: float = Field(gt=0)
    """The most the run may spend, judges included: no request is sent whose worst-case cost (every byte of its messages as an input token, plus max_tokens out, at its price; the batch discount in batch mode) could take the spend over it. At the cap the run stops, resumable: `trialrun resume RUN budget.max_usd=N`."""
    warn_at: float = Field(default=0.8, gt=0, lt=1)
    """Fraction of max_usd at which the run warns (once) and `status` flags the spend."""


class GateConfig(StrictModel):
    """An early-stop rule checked as results commit (see `gates:`)."""

    name: str | None = None
    """Names the gate in messages and for `resume --ignore-gate NAME`; default gate-1, gate-2, ..."""
    metric: str
    """A pass/fail metric as `trialrun stats` takes it (a bool score, `judge.answer=pass`, `judges.NAME.FIELD=VALUE`), or `failed_rate` (the share of finished trials that failed)."""
    group_by: Literal["model", "cell", "run"] = "model"
    """The groups a rule is checked on: each model, each model x grid cell, or the whole run."""
    min_n: int = Field(default=30, ge=1)
    """No decision before a group has this many values."""
    stop_if: str
    """When to stop: comparisons of rate, ci_low, ci_high (Wilson 95%), n, successes, missing with numbers, joined by and/or/not: `"ci_high < 0.10"`."""
    action: Literal["stop", "pause"] = "stop"
    """Both stop the run cleanly, resumable with `resume RUN --ignore-gate NAME`; `pause` reads as waiting for a decision, `stop` as ended early."""


class BatchConfig(StrictModel):
    poll_min_s: float = Field(default=10.0, gt=0)
    """`collect --wait`: first wait between polls; it grows while nothing changes."""
    poll_max_s: float = Field(default=300.0, gt=0)
    """`collect --wait`: longest wait between polls."""
    max_requests: int | None = Field(default=None, ge=1)
    """Requests per batch at most, below the provider's own limit (which always applies)."""
    max_bytes: int | None = Field(default=None, ge=1)
    """Bytes of requests per batch at most, below the provider's own limit."""


class RayConfig(StrictModel):
    """Local-model (`hf/`) trials on Ray actors, each holding one loaded model (on one GPU
    where the cluster has GPUs); the driver stays the only writer of the store and API
    trials stay in its event loop. Needs pip install 'trialrun[ray]' on every node."""

    address: str = "auto"
    """The cluster: `auto` (the one `ray start` made on this node, or `RAY_ADDRESS`), `local` (start a private one in this process, for one machine), or `HOST:PORT` / `ray://HOST:PORT`."""
    actors: int | None = Field(default=None, ge=1)
    """Actors per model, each with its own copy of the model; by default one per `gpus_per_actor` GPUs in the cluster (at least one)."""
    gpus_per_actor: float | None = Field(default=None, ge=0)
    """GPUs each actor holds; by default 1 where the cluster has GPUs, else 0 (CPU)."""
    cpus_per_actor: float = Field(default=1.0, ge=0)
    """CPUs each actor holds."""
    max_restarts: int = Field(default=3, ge=0)
    """Lost actors a model's lane replaces (its requests rescheduled on the new one) before its remaining trials fail."""


class ExecutorConfig(StrictModel):
    ray: RayConfig | None = None
    """Run local-model trials on a Ray cluster (`ray: {address: auto}`); unset, they run in this process."""


class PriceConfig(StrictModel):
    input: float = Field(ge=0)
    """USD per million input tokens."""
    output: float = Field(ge=0)
    """USD per million output tokens."""
    batch_discount: float = Field(default=0.5, ge=0, le=1)
    """Fraction taken off for batch APIs."""


class OutputConfig(StrictModel):
    dir: str = "runs"
    """Folder that holds run folders; relative to the current directory."""
    sync: str | None = None
    """Object storage to copy the run to as it runs: any fsspec URL (`s3://bucket/prefix`, `gs://bucket/prefix`, `file:///mnt/share`); the run goes to `URL/<run id>/` and `trialrun resume URL/<run id>` continues it on another machine. Credentials and endpoints come from the store's usual environment (AWS_*, AWS_ENDPOINT_URL, Google's ADC); needs pip install 'trialrun[sync]'."""
    sync_every: int = Field(default=50, ge=1)
    """Upload a snapshot every this many committed trials (and at the start, after each batch-mode collect pass that changed the run, and at the end)."""
    sync_interval_s: float = Field(default=60.0, gt=0)
    """Upload a snapshot at least this often (seconds) while trials commit."""


class IntegrityConfig(StrictModel):
    """Checks of the data a run uses: refuse overlap with other datasets, flag canaries."""

    disjoint_from: list[str] = Field(default_factory=list)
    """Dataset files (JSON, JSONL, CSV; relative to the config's folder) none of whose items may be in this dataset: the run refuses to start while any item's text, normalised (NFKC, case-folded, whitespace collapsed), equals one of theirs."""
    fields: list[str] | None = None
    """The item fields whose string values, joined, make an item's text; by default every string field but the id (`trialrun check-data --field` is the same)."""
    canaries: list[str] = Field(default_factory=list)
    """Canary strings: every record whose responses contain one (case-sensitive) lists it in its `canaries` field, and `status` counts those records."""

    @field_validator("canaries")
    @classmethod
    def _no_empty_canary(cls, canaries: list[str]) -> list[str]:
        if any(not c for c in canaries):
            raise ValueError("an empty canary string would match every response")
        return canaries


class Experiment(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    """Experiment name (at most 100 characters); it names run folders and enters trial ids."""
    seed: int = 0
    """Experiment seed; each trial's seed derives from it and the trial id."""
    dataset: DatasetConfig
    """Where the items come from."""
    models: list[ModelConfig] = Field(min_length=1)
    """Models to run, each as `provider/model-id`."""
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """Cartesian grid; sampling params (temperature, top_p, max_tokens, ...) reach the request, every value reaches templates."""
    repeats: int = Field(default=1, ge=1)
    """Repeats of each item × cell; each repeat is its own trial with its own seed."""
    messages: list[MessageTemplate] = Field(min_length=1)
    """The first turn's messages (Jinja templates)."""
    followups: list[str] = Field(default_factory=list)
    """One user message template per extra turn; turn k+1 sees the answers of turns 1..k."""
    params: dict[str, Any] = Field(default_factory=lambda: {"max_tokens": 512})
    """Sampling params sent to every model."""
    task: str | None = None
    """A custom trial, `package.module:function` (sync or async), imported from the config's folder or the Python path: it gets a context (item, grid, seed, repeat, model, params, `ctx.generate(...)`) and returns a dict, kept as the record's `output`; its calls are the record's turns. Real-time mode only. See the guide's "Custom trials"."""
    mode: Literal["realtime", "batch"] = "realtime"
    """`realtime` calls the APIs now; `batch` submits to the providers' batch APIs (half price, results within 24 h), one stage per turn."""
    batch: BatchConfig = Field(default_factory=lambda: BatchConfig())
    executor: ExecutorConfig = Field(default_factory=lambda: ExecutorConfig())
    """Where trials run: in this process (the default), or local-model trials on Ray actors (`executor: {ray: {address: auto}}`)."""
    """Batch mode: polling and per-batch limits."""
    limits: dict[str, LimitConfig] = Field(default_factory=dict)
    """Rate limits per provider name (`openai`, `anthropic`, `mock`, ...), shared by every experiment in the process."""
    retry: RetryConfig = Field(default_factory=RetryConfig)
    """Retries, backoff and timeouts."""
    cache: CacheConfig = Field(default_factory=CacheConfig)
    """The shared response cache."""
    mock: MockConfig = Field(default_factory=MockConfig)
    """Behaviour of the offline `mock` provider (latency, injected faults)."""
    output: OutputConfig = Field(default_factory=OutputConfig)
    """Where run folders go."""
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    """Prices by `provider/model`, overriding or extending the shipped table (USD per million tokens)."""
    scores: dict[str, ScorerConfig] = Field(default_factory=dict)
    """Deterministic scorers by name, run on each finished trial without a model call (`correct: {regex: "^VERDICT: yes"}`); values land in the record's `scores`, the reason for each null in `score_errors`. `trialrun score RUN` adds or recomputes them later."""
    gates: list[GateConfig] = Field(default_factory=list)
    """Early-stop rules on running results, decided on confidence intervals so noise does not stop a run."""
    budget: BudgetConfig | None = None
    """A spending cap for the run (`{max_usd: 40}`), enforced before each request and batch; every model and judge must have a known price."""
    judge: JudgeConfig | list[JudgeConfig] | None = None
    """An LLM judge, or a list of named judges, grading each done trial: verdicts land in the record's `judge` (the first judge's), `judges` (every judge's, by name) and, when a judge fails, `judge_error`/`judge_errors`."""
    integrity: IntegrityConfig = Field(default_factory=IntegrityConfig)
    """Data checks: `disjoint_from` datasets this one must not overlap, `canaries` to flag in responses."""

    @field_validator("name")
    @classmethod
    def _name_fits_a_folder_name(cls, name: str) -> str:
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(
                f"at most {MAX_NAME_LENGTH} characters, since it names run folders; "
                f"this one has {len(name)}"
            )
        return name

    @field_validator("scores")
    @classmethod
    def _score_names(cls, scores: dict[str, ScorerConfig]) -> dict[str, ScorerConfig]:
        for name in scores:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"score name '{name}': use letters, digits, _ . - only")
        return scores

    @field_validator("params")
    @classmethod
    def _no_secret_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        refuse_secrets(value)
        return value

    @field_validator("grid")
    @classmethod
    def _grid_names(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if key in RESERVED_TEMPLATE_NAMES:
                raise ValueError(f"grid key '{key}' is reserved; choose another name")
            if not values:
                raise ValueError(f"grid key '{key}' has no values")
            seen: set[str] = set()
            for value in values:
                text = json.dumps(value, sort_keys=True, default=str)
                if text in seen:
                    raise ValueError(f"grid key '{key}' lists the value {value!r} twice")
                seen.add(text)
        return grid

    @model_validator(mode="after")
    def _unique_labels(self) -> Experiment:
        seen: set[str] = set()
        for entry in self.models:
            if entry.label in seen:
                raise ValueError(
                    f"model '{entry.label}' appears twice; give each entry a distinct 'name'"
                )
            seen.add(entry.label)
        return self

    @model_validator(mode="after")
    def _grid_keys_not_misspelt(self) -> Experiment:
        templates = " ".join([m.content for m in self.messages] + self.followups)
        for key in self.grid:
            if key in SAMPLING_PARAMS or re.search(rf"\b{re.escape(key)}\b", templates):
                continue
            close = difflib.get_close_matches(key, sorted(SAMPLING_PARAMS), n=1, cutoff=0.75)
            if close:
                raise ValueError(
                    f"grid.{key} is neither a sampling param nor used by a template "
                    f"(did you mean '{close[0]}'?)"
                )
        return self

    @model_validator(mode="after")
    def _judge_names(self) -> Experiment:
        seen: set[str] = set()
        for index, judge in enumerate(self.judges()):
            if not re.fullmatch(NAME_PATTERN, judge.label):
                raise ValueError(f"judge name '{judge.label}': use letters, digits, _ . - only")
            if judge.label in seen:
                where = f"judge[{index}]"
                raise ValueError(
                    f"{where}: a second judge named '{judge.label}'; give each a distinct 'name'"
                )
            seen.add(judge.label)
        return self

    @field_validator("task")
    @classmethod
    def _task_path(cls, task: str | None) -> str | None:
        if task is not None and not re.fullmatch(TASK_PATTERN, task):
            raise ValueError("expected package.module:function")
        return task

    @model_validator(mode="after")
    def _task_runs_in_real_time(self) -> Experiment:
        if self.task is None:
            return self
        if self.mode == "batch":
            raise ValueError(
                "task: a custom trial runs Python between its calls, which batch mode cannot; "
                "use mode: realtime"
            )
        if self.followups:
            raise ValueError("task: a custom trial makes its own turns; remove followups")
        return self

    def turn_count(self) -> int:
        return 1 + len(self.followups)

    def judges(self) -> list[JudgeConfig]:
        """The judges, each named: `judge` when one is given without a name; in a list, the
        first unnamed is `judge`, the next `judge-2`, and so on."""
        if self.judge is None:
            return []
        listed = self.judge if isinstance(self.judge, list) else [self.judge]
        named = []
        for index, judge in enumerate(listed):
            if judge.name is None and index:
                judge = judge.model_copy(update={"name": f"judge-{index + 1}"})
            named.append(judge)
        return named


def config_warnings(experiment: Experiment) -> list[str]:
    """Lines worth a warning but not a refusal: `limits.<name>` for a provider no model uses.

    Not an error, so that replacing a model by override (`models.0.model=openai/x`, or a
    `--multirun` over models) keeps working with a config whose limits name the old provider."""
    used = sorted({m.provider for m in experiment.models})
    return [_unused_limit(name, used) for name in experiment.limits if name not in used]


def _unused_limit(name: str, used: list[str]) -> str:
    close = difflib.get_close_matches(name, used, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"the models use {', '.join(used)}"
    return f"limits.{name}: no model uses provider '{name}', so it limits nothing ({hint})"
