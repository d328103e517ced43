"""Data flows one way: no module imports one from a layer above its own (STYLE.md 2).

Every module of the package has a layer below; an import of a higher layer, a module
left out of the table, or an import of another module's `_private` name fails here,
so the layering stays true as the code grows (a new module must say where it sits).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "trialrun"

LAYERS: list[tuple[str, ...]] = [
    # 0: no trialrun imports but each other
    ("errors", "types", "hashing", "secrets", "stats", "verdicts", "power", "sampling"),
    # 1: the config and what reads only it
    (
        "config",
        "config_keys",
        "config_yaml",
        "env_refs",
        "overrides",
        "pricing",
        "sandbox",
        "metrics",
        "user_code",
    ),
    # 2: the outside world and the run's database
    ("providers", "local", "store", "templates"),
    # 3: experiments into trials, and running them
    (
        "plan",
        "dataset",
        "executor",
        "routing",
        "export",
        "provenance",
        "testing",
        "scoring",
        "integrity",
        "gates",
        "sync",
    ),
    # 4: the public API
    (
        "api",
        "loading",
        "runs",
        "running",
        "rescoring",
        "analysis",
        "pilot",
        "annotation",
        "judging",
        "merging",
        "stopping",
        "report",
        "verification",
        "view",
        "inspect_log",
    ),
    # 5: what people see, and tools over the API
    ("display", "estimate", "doctor"),
    # 6: the command line, the package's front, and the reference generated from the CLI
    ("cli", "__init__", "__main__", "reference"),
]


def layer_of(module: str) -> int:
    """The layer of `trialrun.<module>` by its first name (`executor.batch` -> executor)."""
    head = module.split(".")[0] if module else "__init__"
    for rank, names in enumerate(LAYERS):
        if head in names:
            return rank
    raise AssertionError(f"trialrun.{module} is in no layer: add it to LAYERS in {__file__}")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts)
        found[name.removesuffix(".__init__") if name != "__init__" else ""] = path
    return found


def imports(path: Path, module: str) -> list[tuple[str, list[str]]]:
    """(imported trialrun module, names taken from it) for every import in the file."""
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*filter(None, parent), base]).strip(".")
                base = f"trialrun.{base}" if base else "trialrun"
            if not base.startswith("trialrun"):
                continue
            target = base.removeprefix("trialrun").lstrip(".")
            names = [alias.name for alias in node.names]
            if not target:  # `from trialrun import secrets`: each name is a module
                out += [(name, []) for name in names if (PACKAGE / f"{name}.py").exists()]
                out += [("__init__", [n]) for n in names if not (PACKAGE / f"{n}.py").exists()]
            else:
                out.append((target, names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("trialrun."):
                    out.append((alias.name.removeprefix("trialrun."), []))
    return out


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = []
    for module, path in sorted(modules().items()):
        mine = layer_of(module)
        for target, _ in imports(path, module):
            if target != "__init__" and layer_of(target) > mine:
                upward.append(f"trialrun.{module} (layer {mine}) imports trialrun.{target}")
    assert upward == []


def test_no_module_imports_another_modules_private_names() -> None:
    private = [
        f"trialrun.{module} imports {target}.{name}"
        for module, path in sorted(modules().items())
        for target, names in imports(path, module)
        for name in names
        if name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert private == []


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    path = tmp_path / "store.py"
    path.write_text("from trialrun.api import Run\n")
    found = imports(path, "store")
    assert found == [("api", ["Run"])]
    assert layer_of("api") > layer_of("store")
