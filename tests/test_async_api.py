"""The Python API from async code and from inside a running event loop (a notebook)."""

from __future__ import annotations

import asyncio

import trialrun
from conftest import base_config


def test_arun_runs_an_experiment_on_the_callers_event_loop() -> None:
    async def main() -> trialrun.Run:
        return await trialrun.arun(base_config())

    run = asyncio.run(main())
    assert run.counts()["done"] == 16


def test_the_sync_api_works_inside_a_running_event_loop_as_in_jupyter() -> None:
    async def cell() -> tuple[trialrun.Run, trialrun.Run]:
        # Jupyter runs cells inside its own loop: asyncio.run() would refuse here.
        first = trialrun.run(base_config(repeats=1), limit=3)
        again = trialrun.resume(first)
        return first, again

    first, again = asyncio.run(cell())
    assert first.counts() == {"pending": 0, "running": 0, "done": 3, "failed": 0}
    assert again.path == first.path


def test_aresume_finishes_a_run_created_without_running_it() -> None:
    run = trialrun.api.create_run(trialrun.load(base_config()))
    assert run.counts()["pending"] == 16
    asyncio.run(trialrun.aresume(run))
    assert run.counts()["done"] == 16
