"""``Idempotency-Key`` records for the writes written once over the executor (artifacts, release): the key
taken in the write's own transaction, and the answer recorded with it. SQL in ``queries/idempotency.sql``."""

from __future__ import annotations

from datetime import UTC, datetime

from buildstate.store.executor import Row, Statement, Transaction
from buildstate.store.queries import Queries
from buildstate.store.types import Idempotency, same_request

IDEMPOTENCY = Queries("idempotency")


def claim(idem: Idempotency) -> Transaction[Row | None]:
    """Take the key for this transaction (None), or the row first recorded under it (its fingerprint
    checked: the same key with another request is 422)."""
    claimed = yield IDEMPOTENCY.statement(
        "claim_key", actor=idem.actor, key=idem.key, fingerprint=idem.fingerprint, now=datetime.now(UTC)
    )
    if claimed:
        return None
    rows = yield IDEMPOTENCY.statement("key_answer", actor=idem.actor, key=idem.key)
    same_request(idem, rows[0]["fingerprint"])
    return rows[0]


def record(idem: Idempotency, status_code: int, body: bytes) -> Statement:
    """The statement that keeps the answer under the key, for its replays."""
    return IDEMPOTENCY.statement(
        "record_answer", actor=idem.actor, key=idem.key, status_code=status_code, body=body.decode()
    )
