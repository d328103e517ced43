"""The config's key paths: which keys a path may hold, the first unknown one in a path, and
"did you mean" hints, read from the pydantic models of trialrun.config (so they cannot
drift from the schema); `clip` shortens what the user typed for an error line."""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from trialrun.config import SAMPLING_PARAMS, Experiment


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
    """The annotation one key deeper, or raise KeyError if `part` cannot be there (in a
    union, such as one judge or a list of judges, the first member it fits)."""
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        for member in get_args(annotation):
            if member is type(None):
                continue
            try:
                return _step(member, part)
            except KeyError:
                pass
        raise KeyError(part)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            if part == _key_name(name, info):
                return info.annotation
        raise KeyError(part)
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
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(
            (m for m in get_args(annotation) if isinstance(m, type) and issubclass(m, BaseModel)),
            annotation,
        )
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [_key_name(name, info) for name, info in annotation.model_fields.items()]
    return []


def _key_name(name: str, info: Any) -> str:
    """A field's key in a config file (its alias: `schema` for `schema_`)."""
    return str(info.alias or name)


def first_unknown_key(path: list[str]) -> int | None:
    """The index of the first part of a dotted key path that no config can have, or None
    when every part fits (`grid.x` fits any name; `retry.tries` stops at 1)."""
    annotation: Any = Experiment
    for depth, part in enumerate(path):
        try:
            annotation = _step(annotation, part)
        except KeyError:
            return depth
    return None


def unknown_key_hint(parent: list[str], part: str) -> str:
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


def clip(text: str, limit: int = 80) -> str:
    """A user's text short enough for an error line (a 4,300-digit value would flood it)."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
