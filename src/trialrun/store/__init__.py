"""The run's SQLite database (WAL): the only package that writes it, and the home of all SQL.

- `schema`: the numbered, transactional migrations, `connect` and `migrate`;
- `rows`: the rows that go in and come out, as dataclasses;
- `base`: the connection, transactions, the write buffer and the one attempts INSERT;
- `core`: `Store`, over the run tables (meta, items, trials, attempts, records, events);
- `batches`: batch mode's tables, a family of queries `Store` mixes in;
- `judgments`: the LLM judges' table, another;
- `annotations`: human annotation's sheets (blinding keys) and labels, another;
- `browse`: committed records a filtered page at a time (the dashboard's browser).

A new family of tables (judgments, scores, annotations, sync state) is one more module
like `batches.py`: a migration appended in `schema`, its rows in `rows`, and a mixin over
`StoreBase` that `Store` inherits, so the run tables' code does not grow with it.
"""

from trialrun.store.annotations import AnnotationRow, SheetRow
from trialrun.store.batches import BATCH_OPEN
from trialrun.store.browse import RecordPage, RecordQuery
from trialrun.store.core import LIVE_REFRESH_S, Store
from trialrun.store.judgments import JUDGE_TURN
from trialrun.store.rows import (
    AnsweredTurn,
    Attempt,
    BatchOutcomeRow,
    BatchRequest,
    JudgmentRow,
    OutstandingRequest,
    PendingTrial,
    ReadyRequest,
    RecordRow,
    ToJudge,
    TrialProgress,
    TurnOutcome,
)
from trialrun.store.schema import (
    DB_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    STATES,
    connect,
    migrate,
    utcnow,
)

__all__ = [
    "BATCH_OPEN",
    "DB_NAME",
    "JUDGE_TURN",
    "LIVE_REFRESH_S",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STATES",
    "AnnotationRow",
    "AnsweredTurn",
    "Attempt",
    "BatchOutcomeRow",
    "BatchRequest",
    "JudgmentRow",
    "OutstandingRequest",
    "PendingTrial",
    "ReadyRequest",
    "RecordPage",
    "RecordQuery",
    "RecordRow",
    "SheetRow",
    "Store",
    "ToJudge",
    "TrialProgress",
    "TurnOutcome",
    "connect",
    "migrate",
    "utcnow",
]
