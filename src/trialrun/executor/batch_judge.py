"""Batch mode's judge stage: a trial's LLM judges as one more stage, through each judge
provider's batch API at its batch price.

Online judges (`when: online`): a pending trial whose turns are all answered does not
commit its record at once (advance.py). Each online judge gets a `batch_requests` row
under turn `-1 - i` (`i`: the judge's index in `run.judges`; custom id `<trial>_j<i>`; the
judge route's lane), answered at once when the cache has it. When every judge's request
has an outcome, each reply is read: an invalid verdict with re-asks left is asked again
in the same row (the stage repeats); once every judge's outcome is final, the record
commits with its judgments in one transaction, as in real time.

After judges (`when: after`) and records an online judge missed (committed in real time,
or before the judge was added): once no trial is pending, `judge_committed` gives them
requests the same way, and on resolution patches the committed record with its
judgments in one transaction.

A judge's request that fails (an API error, out of attempts) is a judgment with state
failed and kind `api`; the trial itself stays done. A judgment's usage, cost and calls
are summed over the attempts logged for its asks (`Store.judge_spend`), each priced at
the batch price by `store_answer(..., batch=True)` with the judge's route.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import orjson

from trialrun.errors import TrialrunError
from trialrun.executor.judge import (
    Judge,
    Reading,
    after_reply,
    apply_verdicts,
    asks_of,
    judge_context,
    judge_messages,
    judge_request,
    read_reply,
    reask_messages,
    spent_row,
)
from trialrun.executor.trial import (
    ExperimentRun,
    ModelRoute,
    cached_response,
    log_cache_hit,
    store_record,
)
from trialrun.store import (
    JUDGE_TURN,
    BatchRequest,
    JudgmentRow,
    PendingTrial,
    ReadyRequest,
    ToJudge,
)
from trialrun.store.batches import JudgeRequest
from trialrun.store.judgments import JudgeSpend
from trialrun.types import Response

PAGE = 500
JUDGE_LABEL = "judge:"
"""Prefix of a judge's label in the `batches` table (a model entry's label otherwise)."""
NOTHING_SPENT = JudgeSpend(0, 0, 0.0, 0.0, 0, 0, None)
OUT = ("ready", "submitted")


def judge_turn(index: int) -> int:
    """The `turn` of the requests of the run's judge number `index`: -1, -2, ..."""
    return JUDGE_TURN - index


def judge_label(judge: Judge) -> str:
    return f"{JUDGE_LABEL}{judge.name}"


def route_of(run: ExperimentRun, label: str) -> ModelRoute:
    """The route a batch's label names: a model entry's, or a judge's."""
    route = run.routes.get(label)
    if route is not None:
        return route
    return next(j.route for j in run.judges if judge_label(j) == label)


def ready_label(run: ExperimentRun, ready: ReadyRequest) -> str:
    """The label of the route a ready request goes through: its trial's model, or a judge."""
    return ready.model if ready.turn >= 0 else judge_label(run.judges[JUDGE_TURN - ready.turn])


# ------------------------------------------------------------------ one trial's judges


@dataclass
class _Step:
    """Where a trial's judges stand: new asks, final judgments, and whether one is out."""

    asks: list[BatchRequest] = field(default_factory=list)
    rows: list[JudgmentRow] = field(default_factory=list)
    out: bool = False

    @property
    def final(self) -> bool:
        return not self.asks and not self.out


def _step(
    run: ExperimentRun,
    trial_id: str,
    record: dict[str, Any],
    judges: list[tuple[int, Judge]],
    requests: dict[int, JudgeRequest],
) -> _Step:
    context = judge_context(run, record)
    step = _Step()
    for index, judge in judges:
        outcome = _judge_one(run, index, judge, trial_id, context, requests.get(judge_turn(index)))
        if outcome is None:
            step.out = True
        elif isinstance(outcome, BatchRequest):
            step.asks.append(outcome)
        else:
            step.rows.append(outcome)
    return step


def _judge_one(
    run: ExperimentRun,
    index: int,
    judge: Judge,
    trial_id: str,
    context: dict[str, Any],
    request: JudgeRequest | None,
) -> BatchRequest | JudgmentRow | None:
    """One judge of one trial: its final judgment, its next ask, or None (an ask is out)."""
    if request is not None and request.state in OUT:
        return None
    try:
        first = judge_messages(judge, context)
    except TrialrunError as exc:  # the prompt failed to render for this trial
        return spent_row(
            judge, trial_id, NOTHING_SPENT, 0, "", None, Reading(None, str(exc), "prompt")
        )
    if (
        request is None
        or request.state == "abandoned"
        or not _continues(judge, trial_id, first, request)
    ):
        return _ask(run, index, judge, trial_id, first)
    messages: list[dict[str, str]] = orjson.loads(request.request)["messages"]
    asks = asks_of(messages)
    keys = [judge_request(judge, trial_id, ask).key for ask in asks]
    spend = run.store.judge_spend(trial_id, judge_turn(index), keys)
    if request.response is None:  # the request failed: an API error, or out of attempts
        reading = Reading(None, request.error or "the judge's batch request failed", "api")
        return spent_row(judge, trial_id, spend, len(asks), request.request, None, reading)
    response = Response.from_json(orjson.loads(request.response))
    reading = read_reply(judge, response)
    final = after_reply(judge, reading, len(asks))
    if final is None:
        again = reask_messages(messages, response.text, reading.error or "")
        return _ask(run, index, judge, trial_id, again)
    return spent_row(judge, trial_id, spend, len(asks), request.request, response, final)


def _continues(
    judge: Judge, trial_id: str, first: list[dict[str, str]], request: JudgeRequest
) -> bool:
    """Whether a stored request is this judge's, as it is now, of this trial: the same
    first ask and the same key (model, options, params, schema). A request of an earlier
    spec of the judge is not read as this one's."""
    messages = orjson.loads(request.request).get("messages") or []
    return (
        messages[:1] == first and judge_request(judge, trial_id, messages).key == request.cache_key
    )


def _ask(
    run: ExperimentRun, index: int, judge: Judge, trial_id: str, messages: list[dict[str, str]]
) -> BatchRequest:
    """A judge's ask as a batch request: ready to submit, or answered from the cache."""
    turn = judge_turn(index)
    request = dataclasses.replace(judge_request(judge, trial_id, messages), turn=turn)
    custom_id = f"{trial_id}_j{index}"  # [A-Za-z0-9_-]{1,64}, as Anthropic requires
    lane = judge.route.lane
    response = cached_response(run, request.key)
    if response is None:
        return BatchRequest(trial_id, turn, custom_id, lane, "ready", request.key, request.json)
    response_json = log_cache_hit(run, request, response)
    return BatchRequest(
        trial_id, turn, custom_id, lane, "done", request.key, request.json, response_json
    )


def _keep(run: ExperimentRun, record: dict[str, Any], rows: list[JudgmentRow]) -> None:
    for row in rows:
        run.store.add_judgment(row)
        run.count_judgment(row.judge, row.state == "done")
    apply_verdicts(record, run.judges, rows)


# ------------------------------------------------------------------ online: before the record


def judge_online(
    run: ExperimentRun,
    trial: PendingTrial,
    record: dict[str, Any],
    requests: dict[int, JudgeRequest],
) -> list[BatchRequest]:
    """A trial with every turn answered: its online judges' next asks; once each has its
    final outcome, the record is buffered with its judgments (one transaction)."""
    judges = [(i, j) for i, j in enumerate(run.judges) if j.config.when == "online"]
    step = _step(run, trial.trial_id, record, judges, requests)
    if step.final:
        _keep(run, record, step.rows)
        store_record(run, trial, record)
    return step.asks


# ------------------------------------------------------------------ after: committed records


def judge_committed(run: ExperimentRun) -> int:
    """Once no trial is pending, the done records a judge of the run has not judged get
    its asks; a record whose judges all have their outcome is patched with them. Sweeps
    until a sweep answers nothing from the cache; returns the cache hits."""
    if not run.judges:
        return 0
    counts = run.store.counts()
    if counts["pending"] + counts["running"]:
        return 0
    pairs = [(j.name, j.spec_hash) for j in run.judges]
    hits = 0
    while True:
        swept, after = 0, -1
        while page := run.store.to_judge(pairs, after_seq=after, limit=PAGE):
            after = page[-1].seq
            swept += _judge_page(run, page)
            run.maybe_flush()
        run.flush()
        hits += swept
        if not swept:
            return hits


def _judge_page(run: ExperimentRun, page: list[ToJudge]) -> int:
    requests = run.store.judge_requests([row.trial_id for row in page])
    asks: list[BatchRequest] = []
    for row in page:
        asked = requests.get(row.trial_id, {})
        if any(request.state in OUT for request in asked.values()):
            continue  # a judge's ask is out: nothing to do until it comes back
        states = run.store.judgment_states(row.trial_id)
        todo = [(i, j) for i, j in enumerate(run.judges) if (j.name, j.spec_hash) not in states]
        record = orjson.loads(row.record)
        step = _step(run, row.trial_id, record, todo, asked)
        if step.final:
            _keep(run, record, step.rows)
            run.store.patch_record(row.trial_id, orjson.dumps(record).decode())
        asks.extend(step.asks)
    run.store.add_batch_requests(asks)
    return sum(1 for ask in asks if ask.state == "done")


def nothing_to_judge(run: ExperimentRun) -> bool:
    """No judge's request is out and every done record has each judge's outcome."""
    if not run.judges:
        return True
    if run.store.judge_requests_out():
        return False
    pairs = [(j.name, j.spec_hash) for j in run.judges]
    return not run.store.to_judge(pairs, limit=1)
