"""The experiment config: pydantic models, YAML loading, KEY=VALUE overrides, env references.

Every field carries a docstring; the config reference in docs/reference.md is generated
from them, so the docs cannot drift from the code.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trialrun import secrets
from trialrun.errors import ConfigError, unstorable_text

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_NAME_LENGTH = 100
"""A run folder is named `<name>-<YYYYmmdd-HHMMSS>-<4 hex>` (`.<...>.tmp` while written):
126 bytes at most, well under the 255 of most file systems (143 under eCryptfs)."""
MAX_DEPTH = 100
"""Deepest nesting of a config or a dataset row (the top mapping is level 1). Configs and
items are shallow; the cap keeps every recursive walker (PyYAML, json, deepcopy, pydantic)
far from Python's recursion limit."""
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
PLANNED_KEYS = {
    "task": "custom trial functions",
    "judge": "LLM judging",
    "budget": "budgets",
    "gates": "early-stop gates",
}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


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

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if (self.path is None) == (self.items is None):
            raise ValueError("give exactly one of 'path' (a file) or 'items' (inline rows)")
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


class BatchConfig(StrictModel):
    poll_min_s: float = Field(default=10.0, gt=0)
    """`collect --wait`: first wait between polls; it grows while nothing changes."""
    poll_max_s: float = Field(default=300.0, gt=0)
    """`collect --wait`: longest wait between polls."""
    max_requests: int | None = Field(default=None, ge=1)
    """Requests per batch at most, below the provider's own limit (which always applies)."""
    max_bytes: int | None = Field(default=None, ge=1)
    """Bytes of requests per batch at most, below the provider's own limit."""


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
    mode: Literal["realtime", "batch"] = "realtime"
    """`realtime` calls the APIs now; `batch` submits to the providers' batch APIs (half price, results within 24 h), one stage per turn."""
    batch: BatchConfig = Field(default_factory=lambda: BatchConfig())
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

    @field_validator("name")
    @classmethod
    def _name_fits_a_folder_name(cls, name: str) -> str:
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(
                f"at most {MAX_NAME_LENGTH} characters, since it names run folders; "
                f"this one has {len(name)}"
            )
        return name

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

    def turn_count(self) -> int:
        return 1 + len(self.followups)


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


# ---------------------------------------------------------------- loading


class RefusedYAML(yaml.MarkedYAMLError):
    """YAML that parses but that trialrun refuses: a key given twice in one mapping (PyYAML
    would keep the last silently), nesting deeper than MAX_DEPTH (PyYAML's composer recurses
    and would crash), an integer longer than Python reads from text."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (no object tags), reading `1e-5` as a float as YAML 1.2 does,
    and raising RefusedYAML, with the line, on what would pass silently or crash."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise RefusedYAML(
                    problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self._refuse_duplicate_keys(node)
        return super().construct_mapping(node, deep)

    def _refuse_duplicate_keys(self, node: yaml.MappingNode) -> None:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys merged in by `<<: *base` may be overridden: that is merging
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first_line.get(key)
            except TypeError:
                continue  # an unhashable key: PyYAML's own error follows
            if seen is not None:
                raise RefusedYAML(
                    problem=f"key '{key}' given twice in one mapping (first at line {seen}); "
                    "keep one",
                    problem_mark=key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # sys.int_info's limit on decimal digits (CVE-2020-10735)
            digits = sum(ch.isdigit() for ch in str(node.value))
            limit = sys.get_int_max_str_digits()
            raise RefusedYAML(
                problem=f"an integer of {digits:,} digits is longer than the {limit:,} Python "
                "reads; quote it to keep it as text",
                problem_mark=node.start_mark,
            ) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)

_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a config file safely (no Python object tags) into a dict."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}:{_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    _check_shape(data, f"{path}: the config")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """` line 3, column 5: YAML syntax error: ...` (refused YAML is not a syntax error)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    label = "" if isinstance(exc, RefusedYAML) else "YAML syntax error: "
    return f"{where}: {label}{problem}"


MAX_CONFIG_VALUES = 200_000
"""A config is small; YAML aliases can make a tiny file expand exponentially (the
"billion laughs"), which would exhaust memory when it is validated and copied."""


def _check_shape(data: Any, what: str) -> None:
    """Refuse what YAML aliases (*name) make huge or deep: a tiny file can expand
    exponentially (the "billion laughs"), or nest an anchor in an alias past MAX_DEPTH."""
    aliases = "once its YAML aliases (*name) are followed"
    count, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{what} expands to more than {MAX_CONFIG_VALUES:,} values {aliases}; "
                "use fewer aliases or a dataset file"
            )
        if depth > MAX_DEPTH:
            raise ConfigError(f"{what} nests more than {MAX_DEPTH} levels deep {aliases}")
        if isinstance(value, dict):
            stack.extend((part, depth + 1) for pair in value.items() for part in pair)
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a parsed JSON or YAML value nests more than `limit` levels (scalars count)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


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
        error = exc.errors()[0]
        where, note = _blame(raw, error["loc"], source)
        raise ConfigError(f"{where}: {_describe(error)}{note}") from None


def _blame(raw: dict[str, Any], loc: tuple[Any, ...], source: str) -> tuple[str, str]:
    """(where, note): the override that set the failing key (the last, if several did), else
    the overrides when the config is valid without them, else the config file."""
    if not isinstance(raw, Overridden) or not raw.setters:
        return source, ""
    parts = tuple(str(part) for part in loc)
    for setter in reversed(raw.setters):
        if parts[: len(setter.path)] == setter.path:
            note = "; the value is not valid YAML, so it was read as text" if setter.as_text else ""
            return _override(setter.text), note
    try:
        Experiment.model_validate(raw.base)
    except ValidationError:
        return source, ""
    texts = ", ".join(f"'{_clip(setter.text)}'" for setter in raw.setters)
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
        return f"unknown key '{_clip(key)}'{_unknown_key_hint(loc[:-1], loc[-1])}"
    if error["type"] == "missing":
        return f"key '{key}' is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not loc:
        return message
    got = error.get("input")
    # A rejected literal key (or a URL holding one) must not reach a terminal or a log.
    secret = loc[-1] in ("api_key", "base_url")
    hidden = secret or isinstance(got, dict | list) or got is None
    shown = "" if hidden else f" (got {_clip(repr(got))})"
    return f"key '{key}': {message}{shown}"


def _unknown_key_hint(parent: list[str], part: str) -> str:
    """` (did you mean 'x'?)`; a sampling param given on its own says where params go."""
    known = _known_keys(parent)
    if part in SAMPLING_PARAMS and "params" in known:
        places = [".".join([*parent, "params", part])]
        if "grid" in known:
            places.append(f"grid.{part}")
        return f" (did you mean {' or '.join(places)}?)"
    return _did_you_mean(part, known)


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(options)})"


# ---------------------------------------------------------------- schema walking


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated so the walker sees the container or model type."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    return annotation


def _step(annotation: Any, part: str) -> Any:
    """The annotation one key deeper, or raise KeyError if `part` cannot be there."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if part not in annotation.model_fields:
            raise KeyError(part)
        return annotation.model_fields[part].annotation
    origin = get_origin(annotation)
    if origin is dict:
        return get_args(annotation)[1] if get_args(annotation) else Any
    if origin is list:
        if not part.lstrip("-").isdigit():
            raise KeyError(part)
        return get_args(annotation)[0] if get_args(annotation) else Any
    if annotation is Any:
        return Any
    raise KeyError(part)


def _known_keys(path: list[str]) -> list[str]:
    annotation: Any = Experiment
    try:
        for part in path:
            annotation = _step(annotation, part)
    except KeyError:
        return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


# ---------------------------------------------------------------- overrides


class Setter(NamedTuple):
    """Which override set which key, in the form pydantic's error locations take."""

    path: tuple[str, ...]
    """Dotted key with list indices resolved (`models.-1` → `models.1`)."""
    text: str
    as_text: bool
    """The value was not valid YAML, so it was kept as a string."""


class Overridden(dict[str, Any]):
    """A raw config with KEY=VALUE overrides applied that remembers its setters and the
    config before them, so `validate` names the override, not the file, for a bad value."""

    def __init__(self, base: dict[str, Any]) -> None:
        super().__init__(copy.deepcopy(base))
        self.base = base
        self.setters: list[Setter] = []


def parse_override(text: str) -> tuple[list[str], Any]:
    """`grid.temperature=[0,0.5]` → (['grid', 'temperature'], [0, 0.5]); values are YAML."""
    path, value, _ = _parse_override(text)
    return path, value


def _parse_override(text: str) -> tuple[list[str], Any, bool]:
    """(path, value, whether the value was kept as text since it is not valid YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{_override(text)}: expected KEY=VALUE, e.g. repeats=3")
    try:
        parsed, as_text = (yaml.load(value, Loader=_Loader) if value.strip() else None), False
    except RefusedYAML as exc:
        raise ConfigError(f"{_override(text)}: {exc.problem}") from None
    except yaml.YAMLError:
        parsed, as_text = value, True
    _check_shape(parsed, f"override '{_clip(key)}': the value")
    return key.strip().split("."), parsed, as_text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> Overridden:
    """Apply dotted KEY=VALUE overrides to a copy of a raw config; unknown keys are an error."""
    result = Overridden(raw)
    for text in overrides:
        path, value, as_text = _parse_override(text)
        _check_path(path, text)
        resolved = _set_path(result, path, value, text)
        result.setters.append(Setter(tuple(resolved), text, as_text))
    return result


def _override(text: str) -> str:
    return f"override '{_clip(text)}'"


def _clip(text: str, limit: int = 80) -> str:
    """A user's text short enough for an error line (a 4,300-digit value would flood it)."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _check_path(path: list[str], text: str) -> None:
    if path[0] in PLANNED_KEYS:
        raise ConfigError(
            f"{_override(text)}: key '{path[0]}' ({PLANNED_KEYS[path[0]]}) is planned but not "
            "in this version of trialrun yet"
        )
    annotation: Any = Experiment
    for depth, part in enumerate(path):
        try:
            annotation = _step(annotation, part)
        except KeyError:
            key = _clip(".".join(path[: depth + 1]))
            hint = _unknown_key_hint(path[:depth], part)
            raise ConfigError(f"{_override(text)}: unknown key '{key}'{hint}") from None


def _set_path(data: dict[str, Any], path: list[str], value: Any, text: str) -> list[str]:
    """Set the value; return the path with list indices resolved (`-1` → the last index)."""
    node: Any = data
    resolved: list[str] = []
    for depth, part in enumerate(path[:-1]):
        nxt = path[depth + 1]
        if isinstance(node, list):
            index = _list_index(node, part, text)
            node = node[index]
            resolved.append(str(index))
            continue
        if not isinstance(node.get(part), dict | list):
            node[part] = [] if nxt.lstrip("-").isdigit() else {}
        node = node[part]
        resolved.append(part)
    last = path[-1]
    if isinstance(node, list):
        index = _list_index(node, last, text)
        node[index] = value
        last = str(index)
    else:
        node[last] = value
    return [*resolved, last]


def _list_index(node: list[Any], part: str, text: str) -> int:
    index = int(part)
    if not -len(node) <= index < len(node):
        raise ConfigError(f"{_override(text)}: index {index} is out of range")
    return index % len(node)


def expand_multirun(overrides: list[str]) -> list[list[str]]:
    """Hydra-style sweep: each comma-separated override value gives one experiment."""
    choices: list[list[str]] = []
    for text in overrides:
        key, _, value = text.partition("=")
        parts = _split_top_level(value)
        choices.append([f"{key}={part}" for part in parts])
    combos: list[list[str]] = [[]]
    for options in choices:
        combos = [[*combo, option] for combo in combos for option in options]
    return combos


def _split_top_level(value: str) -> list[str]:
    parts, depth, current, quote = [], 0, "", ""
    for char in value:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"" and not current.strip():
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return parts


# ---------------------------------------------------------------- env references


def resolve_env(value: Any, where: str) -> Any:
    """Replace `${env:NAME}` references at run time; the result is never written anywhere."""
    if isinstance(value, dict):
        return {k: resolve_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, f"{where}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set; export it first")
        return os.environ[name]

    return ENV_REF.sub(lookup, value)


def env_references(value: Any) -> set[str]:
    """Names of every `${env:NAME}` inside a raw config value."""
    if isinstance(value, dict):
        return set().union(*(env_references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(env_references(v) for v in value)) if value else set()
    return set(ENV_REF.findall(value)) if isinstance(value, str) else set()
