"""docs/reference.md's config, CLI and CSV-column references, generated from the code: no drift.

python -m trialrun.reference --write docs/reference.md   # refresh the marked sections
python -m trialrun.reference --check docs/reference.md   # exit 1 if stale (a test runs this)
"""

from __future__ import annotations

import argparse
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import click
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from trialrun.config import Experiment
from trialrun.export import CSV_COLUMNS, CSV_PATTERN_COLUMNS


def config_reference() -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += _rows(Experiment, "")
    return "\n".join(lines)


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {meaning} |")
        if nested is not None:
            origin = get_origin(_strip_optional(field.annotation))
            suffix = {dict: ".<name>.", list: "[]."}.get(origin, ".")
            rows += _rows(nested, key + suffix)
    return rows


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _strip_optional(annotation: Any) -> Any:
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in get_args(annotation) else annotation


def _type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin in (Union, types.UnionType):
        return " \\| ".join(_type_name(arg) for arg in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[1])}"
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return ""
    if isinstance(value, BaseModel):
        return "(see below)"
    return f"`{value!r}`".replace("|", "\\|")


def cli_reference() -> str:
    from trialrun.cli import cli

    parts = []
    context = click.Context(cli, info_name="trialrun", terminal_width=100, **cli.context_settings)
    parts.append(f"```\n$ trialrun --help\n{cli.get_help(context)}\n```")
    for name in sorted(cli.commands):
        command = cli.commands[name]
        sub = click.Context(
            command, info_name=name, parent=context, terminal_width=100, **command.context_settings
        )
        parts.append(f"```\n$ trialrun {name} --help\n{command.get_help(sub)}\n```")
    return "\n\n".join(parts)


def csv_columns() -> str:
    """`trialrun export --format csv`'s columns, from the one table `csv_row` fills."""
    lines = ["| column | meaning |", "|---|---|"]
    for column, meaning in {**CSV_COLUMNS, **CSV_PATTERN_COLUMNS}.items():
        escaped = meaning.replace("|", "\\|")
        lines.append(f"| `{column}` | {escaped} |")
    return "\n".join(lines)


SECTIONS = {
    "config-reference": config_reference,
    "cli-reference": cli_reference,
    "csv-columns": csv_columns,
}


def _replacer(body: str) -> Callable[[re.Match[str]], str]:
    return lambda match: match.group(1) + body + "\n" + match.group(2)


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"missing <!-- {name}:start --> ... <!-- {name}:end --> markers")
        text = pattern.sub(_replacer(make()), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="FILE")
    mode.add_argument("--check", metavar="FILE")
    args = parser.parse_args(argv)
    path = Path(args.write or args.check)
    text = path.read_text(encoding="utf-8")
    fresh = render(text)
    if args.write:
        path.write_text(fresh, encoding="utf-8")
        return 0
    if fresh != text:
        print(
            f"{path}: reference sections are stale; run python -m trialrun.reference --write "
            f"{path}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
