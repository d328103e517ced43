"""`trialrun judge`: judge a run's records in real time, after the fact.

It judges what the run's judges have not judged yet (a run stopped before its end, a
`when: after` judge, a judge added later), or with `failed_only` exactly the trials a
judge failed on. `judge.*` overrides change the run's judges; a judge whose spec changes
(another model, prompt, schema or params) while verdicts of its old spec exist is added
beside the old one under a new name (`judge-2`), so old verdicts are never overwritten:
their judgments stay, and both judges' verdicts are in each record's `judges`.

Like a run it holds the run's lock, goes through the judge providers' limits, retries
and the response cache, commits each record's verdicts with its judgments, and stops
cleanly on Ctrl-C (what was judged is kept; the same command goes on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trialrun.config import Experiment, JudgeConfig
from trialrun.errors import UsageError
from trialrun.executor.judge import compile_judges, read_prompt_files, spec_hash
from trialrun.executor.realtime import Limiters, judge_pending
from trialrun.executor.trial import ExperimentRun
from trialrun.export import RESULTS_NAME, ResultsFile
from trialrun.loading import judge_prompts, validate
from trialrun.overrides import apply_overrides
from trialrun.routing import build_judge_routes, check_judges
from trialrun.running import Interrupted, shared_cache, signals_cancel
from trialrun.runs import Run, lock_run
from trialrun.sandbox import signals_stop_renders
from trialrun.store import Store
from trialrun.templates import Conversation


@dataclass
class JudgePass:
    """What `judge_run` is about to do, told before it starts (for a progress bar)."""

    judges: list[str]
    """The judges that judge in this pass."""
    trials: int
    """Records to judge."""
    notes: list[str] = field(default_factory=list)
    """What changed in the run's judges (a judge added beside an old one, ...)."""


def judge_run(
    target: Run,
    overrides: Sequence[str] = (),
    *,
    names: Sequence[str] = (),
    failed_only: bool = False,
    mock: bool = False,
    on_start: Callable[[JudgePass], None] | None = None,
    on_judged: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Judge `target`'s done records that its judges (or those named) have not judged, or
    with `failed_only` those they failed on; returns the run's judge status afterwards
    (`Run.judges()`). `mock` answers every API judge with the mock (a run made with --mock
    always does)."""
    for text in overrides:
        if not (text.startswith("judge.") or text.startswith("judge=")):
            raise UsageError(f"'{text}': only judge.* can change when judging a finished run")
    meta = target.meta()
    source = meta["source"]
    old = Experiment.model_validate(meta["experiment"])
    experiment = validate(apply_overrides(meta["experiment"], list(overrides)), source)
    source_dir = Path(source).resolve().parent if Path(source).exists() else Path.cwd()
    experiment = read_prompt_files(experiment, source_dir, source)
    lock = lock_run(target.path)  # not while another process runs it
    try:
        with target.store(readonly=False) as store:
            experiment, notes = keep_old_verdicts(old, experiment, store)
            if not experiment.judges():
                raise UsageError(
                    f"{target.path}: the run has no judge; add one, e.g. trialrun judge RUN "
                    "judge.model=mock/judge 'judge.prompt=Grade: {{ response }}' "
                    "'judge.schema={answer: [pass, fail]}'"
                )
            _check(experiment, store, source, meta["id_field"])
            mocked = mock or bool(meta["mock"])
            check_judges(experiment, mocked, source)
            run = _judging_run(target, store, experiment, meta, mocked)
            selected = _selected(run, names)
            if experiment != old:
                stored = experiment.model_dump(mode="json", by_alias=True)
                store.set_meta({"experiment": stored})
            pairs = [(j.name, j.spec_hash) for j in selected]
            total = store.count_to_judge(pairs, failed_only=failed_only)
            if on_start is not None:
                on_start(JudgePass([j.name for j in selected], total, notes))
            run.on_judged = on_judged
            cache = None
            try:
                cache = shared_cache(experiment, {})
                run.cache = cache
                interrupted = asyncio.run(_judge(run, selected, failed_only))
            finally:
                run.flush()
                ResultsFile(target.path / RESULTS_NAME).rewrite(store)
                if cache is not None:
                    cache.close()
    finally:
        lock.close()
    if interrupted:
        raise Interrupted(
            f"stopped; committed verdicts are safe. Continue with: trialrun judge {target.path}"
            + (" --failed-only" if failed_only else "")
        )
    return target.judges()


def keep_old_verdicts(
    old: Experiment, new: Experiment, store: Store
) -> tuple[Experiment, list[str]]:
    """`new` with its old verdicts kept: a judge whose spec changed while its old spec has
    judgments is renamed (`judge-2`, ...) and put beside the old judge, which stays first
    (it stays the record's `judge`). A judge with no judgments yet is simply replaced."""
    counts = store.judge_counts()
    judged = {name for name, _ in counts}
    before = {j.label: j for j in old.judges()}
    taken = set(before) | judged | {j.label for j in new.judges()}
    kept: list[JudgeConfig] = []
    added: list[JudgeConfig] = []
    notes = []
    for judge in new.judges():
        prior = before.get(judge.label)
        if prior is None or spec_hash(prior) == spec_hash(judge):
            kept.append(judge)
            continue
        if (judge.label, spec_hash(prior)) not in counts:
            kept.append(judge)  # nothing judged under the old spec: replaced
            continue
        name = _free_name(judge.label, taken)
        taken.add(name)
        added.append(judge.model_copy(update={"name": name}))
        kept.append(prior)
        notes.append(
            f"judge '{judge.label}' changed, and its verdicts are kept: the new judge is "
            f"'{name}' ({judge.model}); name it yourself with judge.name=..."
        )
    if not added:
        return new, notes
    judges = kept + added
    named = [j if j.name else j.model_copy(update={"name": j.label}) for j in judges]
    return new.model_copy(update={"judge": named}), notes


def _free_name(name: str, taken: set[str]) -> str:
    number = 2
    while f"{name}-{number}" in taken:
        number += 1
    return f"{name}-{number}"


def _check(experiment: Experiment, store: Store, source: str, id_field: str) -> None:
    """The judges' schemas and prompt names, and their item fields against the first item."""
    prompts = judge_prompts(experiment, source)
    for item_id, item in store.items().items():
        for prompt in prompts:
            prompt.check_fields({id_field: item_id, **item}, f"item '{item_id}'")
        break


def _judging_run(
    target: Run, store: Store, experiment: Experiment, meta: dict[str, Any], mock: bool
) -> ExperimentRun:
    """What `judge_pending` needs of a run: its store, templates (to show a judge the user
    messages again) and judges; no model routes, since no trial runs."""
    warnings: list[str] = []
    routes = build_judge_routes(experiment, mock, warnings.append)
    return ExperimentRun(
        run_id=meta["run_id"],
        experiment=experiment,
        store=store,
        conversation=Conversation(experiment, meta["source"]),
        routes={},
        cache=None,
        id_field=meta["id_field"],
        on_commit=lambda committed: None,
        reuse_attempts=True,
        judges=compile_judges(experiment, routes, meta["source"]),
    )


def _selected(run: ExperimentRun, names: Sequence[str]) -> list[Any]:
    if not names:
        return list(run.judges)
    known = {j.name: j for j in run.judges}
    for name in names:
        if name not in known:
            raise UsageError(
                f"--judge {name}: no such judge (the run's judges: {', '.join(known)})"
            )
    return [known[name] for name in names]


async def _judge(run: ExperimentRun, judges: list[Any], failed_only: bool) -> bool:
    """The judging pass, stopped cleanly by SIGINT/SIGTERM; True when interrupted."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        judge_pending(run, Limiters(), stop, judges, failed_only=failed_only)
    )
    try:
        with signals_cancel(task, stop), signals_stop_renders():
            await task
        return False
    except asyncio.CancelledError:
        return True
    finally:
        for judge in run.judges:
            await judge.route.provider.aclose()
