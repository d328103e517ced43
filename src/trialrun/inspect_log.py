"""`trialrun export --format inspect`: a run as Inspect AI eval logs, written through
`inspect_ai.log`'s public API (`EvalLog`, `EvalSample`, `write_eval_log`), so that
`inspect view` opens it.

An Inspect log holds one model and one task configuration, so a run becomes one `.eval`
file per cell (model × grid values; the grid values as the task's args). Each record is a
sample: id = the item id, epoch = repeat + 1, the conversation as messages (prompts
rendered again from the config's templates, as the report does), the last answer as the
output, each score as an Inspect `Score`, and the judges' verdicts (or errors), the grid,
the item's fields and the trial id as metadata. A failed trial is a sample with its error.
Inspect keeps a log's samples in memory while writing it, so memory grows with the
largest cell. Needs the `inspect` extra: pip install 'trialrun[inspect]'.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

from trialrun.errors import UsageError
from trialrun.hashing import canonical
from trialrun.report.data import ReportOptions
from trialrun.report.trials import TrialSampler
from trialrun.runs import Run

ROLES = ("system", "user", "assistant")


def _inspect() -> ModuleType:
    try:
        import inspect_ai.log as log
    except ImportError:  # the extra is not installed
        raise UsageError(
            "--format inspect needs Inspect AI: pip install 'trialrun[inspect]'"
        ) from None
    found: ModuleType = log
    return found


def write_inspect_logs(run: Run, folder: Path) -> dict[Path, int]:
    """One Inspect `.eval` log per cell of `run` under `folder`; {path: samples}."""
    log = _inspect()
    experiment = run.experiment()
    sampler = TrialSampler(experiment, run.meta(), 0, ReportOptions(max_trials=0))
    cells: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for record in run.records():
        key = (str(record["model"]), canonical(record.get("grid") or {}))
        cells[key].append(_sample(record, sampler.messages(record)))
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for (model, grid), samples in cells.items():
        path = folder / f"{_stem(model, grid)}.eval"
        spec = log.EvalSpec(
            created=run.created_at(), task=experiment.name, task_args=_loads(grid),
            dataset=log.EvalDataset(name=experiment.name, samples=len(samples)),
            model=model, config=log.EvalConfig(), run_id=run.run_id,
            metadata={"trialrun_run": run.run_id, "grid": _loads(grid)},
        )  # fmt: skip
        log.write_eval_log(log.EvalLog(status="success", eval=spec, samples=samples), path)
        written[path] = len(samples)
    return written


def _sample(record: dict[str, Any], messages: list[dict[str, str]]) -> Any:
    from inspect_ai.log import EvalError, EvalSample
    from inspect_ai.model import (
        ChatMessageAssistant,
        ChatMessageSystem,
        ChatMessageUser,
        ModelOutput,
    )
    from inspect_ai.scorer import Score

    kinds = {"system": ChatMessageSystem, "user": ChatMessageUser,
             "assistant": ChatMessageAssistant}  # fmt: skip
    chat = [kinds[m["role"]](content=m["content"]) for m in messages if m["role"] in ROLES]
    turns = record.get("turns") or []
    answer = str(turns[-1].get("response") or "") if turns else ""
    item = record.get("item") or {}
    error = record.get("error")
    return EvalSample(
        id=str(record["item_id"]), epoch=int(record.get("repeat") or 0) + 1,
        input=[m for m in chat if m.role != "assistant"][:2] or "",
        target=str(item.get("answer", "")), messages=chat,
        output=ModelOutput.from_content(str(record["model"]), answer),
        scores={name: Score(value=_score_value(v)) for name, v in
                (record.get("scores") or {}).items() if v is not None},
        metadata={"trial_id": record.get("trial_id"), "grid": record.get("grid") or {},
                  "item": item, "judge": record.get("judge"), "judges": record.get("judges"),
                  "judge_errors": record.get("judge_errors"), "status": record.get("status")},
        error=EvalError(message=str(error), traceback="", traceback_ansi="") if error else None,
    )  # fmt: skip


def _score_value(value: Any) -> Any:
    """Inspect's CORRECT/INCORRECT ("C"/"I") for bools, so its accuracy metrics read them."""
    if isinstance(value, bool):
        return "C" if value else "I"
    return value


def _stem(model: str, grid: str) -> str:
    values = _loads(grid)
    text = "_".join([model, *(f"{k}={v}" for k, v in values.items())])
    return re.sub(r"[^A-Za-z0-9._=-]", "_", text)[:200]


def _loads(grid: str) -> dict[str, Any]:
    import json

    found: dict[str, Any] = json.loads(grid)
    return found
