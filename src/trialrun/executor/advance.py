"""Batch mode's step 3: move each pending trial with nothing out to its next turn.

A trial gets the request of its next turn, built from the previous turn's stored request
and answer (answered at once when the cache has it), or its record when every turn is
answered or one failed; with online judges, a trial with every turn answered first gets
its judges' stage (batch_judge.py) and commits its record with their judgments. This is the trial path of batch mode; batch.py holds what goes
through the providers' batch APIs (reconcile, poll, submit).
"""

from __future__ import annotations

import time

import orjson

from trialrun import secrets
from trialrun.executor.batch_judge import judge_online
from trialrun.executor.trial import (
    ExperimentRun,
    TrialResult,
    build_request,
    cached_response,
    followup_messages,
    last_user,
    log_cache_hit,
    make_record,
    request_options,
    store_record,
    template_context,
    trial_params,
)
from trialrun.store import AnsweredTurn, BatchRequest, PendingTrial, TrialProgress, utcnow
from trialrun.store.batches import JudgeRequest
from trialrun.types import Response

PAGE = 500


def advance(run: ExperimentRun) -> int:
    """Sweep the pending trials until a sweep answers nothing from the cache (an answer
    from the cache lets a trial take its next turn at once); returns the cache hits."""
    hits = 0
    while True:
        hits_before = hits
        after = -1
        while page := run.store.pending_without_open_request(after, PAGE):
            after = page[-1].trial.seq
            hits += _advance_page(run, page)
            run.maybe_flush()  # a stage's records are committed as they go, not held
        run.flush()  # completed trials leave `pending` before the next sweep
        if hits == hits_before:
            return hits


def _advance_page(run: ExperimentRun, page: list[TrialProgress]) -> int:
    """Each trial of the page gets its record (every turn answered, or one failed) or the
    request of its next turn; returns how many of those were answered from the cache."""
    turn_count = run.experiment.turn_count()
    continuing = [
        p.trial.trial_id for p in page if 0 < p.done_turns < turn_count and not p.failed_turns
    ]
    last = run.store.last_done_turns(continuing)
    finished = [p.trial.trial_id for p in page if p.done_turns >= turn_count]
    judged = run.store.judge_requests(finished) if run.online_judges() else {}
    requests = []
    for progress in page:
        if progress.failed_turns or progress.done_turns >= turn_count:
            trial = progress.trial
            requests.extend(_complete(run, trial, judged.get(trial.trial_id, {})))
            continue
        requests.append(_next_request(run, progress, last.get(progress.trial.trial_id)))
    run.store.add_batch_requests(requests)
    return sum(1 for request in requests if request.state == "done")


def _next_request(
    run: ExperimentRun,
    progress: TrialProgress,
    previous: AnsweredTurn | None,
) -> BatchRequest:
    """The request of a trial's next turn: ready to submit, already answered from the
    cache, or failed (its template could not be rendered)."""
    trial, turn, lane = progress.trial, progress.done_turns, progress.lane
    custom_id = _custom_id(trial, turn)
    route = run.routes[trial.model]
    try:
        messages = _messages(run, trial, turn, previous)
        options = request_options(route, template_context(trial))
    except Exception as exc:  # a template error fails this trial alone, as in real time
        error = f"turn {turn + 1}: {secrets.redact(str(exc))}"
        return BatchRequest(trial.trial_id, turn, custom_id, lane, "failed", "", "{}", error=error)
    request = build_request(route, trial, turn, messages, trial_params(run, trial), options)
    response = cached_response(run, request.key)
    if response is None:
        return BatchRequest(
            trial.trial_id, turn, custom_id, lane, "ready", request.key, request.json
        )
    response_json = log_cache_hit(run, request, response)
    return BatchRequest(
        trial.trial_id, turn, custom_id, lane, "done", request.key, request.json, response_json
    )


def _custom_id(trial: PendingTrial, turn: int) -> str:
    return f"{trial.trial_id}_t{turn}"  # [A-Za-z0-9_-]{1,64}, as Anthropic requires


def _messages(
    run: ExperimentRun, trial: PendingTrial, turn: int, previous: AnsweredTurn | None
) -> list[dict[str, str]]:
    """A turn's messages, rebuilt from the previous turn's request and answer."""
    context = template_context(trial)
    if turn == 0:
        return run.conversation.first_messages(context)
    assert previous is not None and previous.turn == turn - 1, "turns are answered in order"
    request = orjson.loads(previous.request)
    answer = orjson.loads(previous.response)["response"]
    messages: list[dict[str, str]] = [
        *request["messages"],
        {"role": "assistant", "content": answer},
    ]
    first = len(run.conversation.first)  # few-shot assistant lines there are not turns
    history = [
        {"user": last_user(messages[:index]), "response": message["content"]}
        for index, message in enumerate(messages)
        if index >= first and message["role"] == "assistant"
    ]
    return followup_messages(run, context, messages, turn, history)


def _complete(
    run: ExperimentRun, trial: PendingTrial, judged: dict[int, JudgeRequest]
) -> list[BatchRequest]:
    """A trial whose turns are all answered, or one failed: its record, buffered now, or
    (online judges, every turn answered) its judges' next asks (batch_judge.py)."""
    result = TrialResult()
    for outcome in run.store.trial_turns(trial.trial_id):
        result.retries += max(outcome.attempts - 1, 0)
        if outcome.response is None:
            result.error = outcome.error or "the batch request failed"
            break
        result.turns.append(Response.from_json(orjson.loads(outcome.response)).to_json())
    params = trial_params(run, trial)
    record = make_record(run, trial, params, result, utcnow(), time.perf_counter())
    if result.error is None and run.online_judges():
        return judge_online(run, trial, record, judged)
    store_record(run, trial, record)
    return []
