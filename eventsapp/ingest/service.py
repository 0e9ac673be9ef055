"""HTTP ingest: validate a JSON batch and store it in one transaction with ``write.write_events`` (the
write core), honouring an Idempotency-Key. ``write_events``, ``WriteResult`` and ``reject`` are
re-exported here for the callers that import them from this module."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from prometheus_client import Counter

from . import rules
from .write import WriteResult, reject, write_events  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from .groupcommit import GroupCommitter

IDEMPOTENT_REPLAYS = Counter("eventsapp_idempotent_replays_total", "Responses replayed for a known Idempotency-Key")

# --- HTTP ingest -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestOutcome:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def validate_batch(items: Any) -> list[rules.EventRow]:
    """Return the rows of a JSON batch, or raise an ApiError naming every bad event by index and field."""
    # Imported here: loading this module must not load Marshmallow (the SDK and CLI paths need not).
    from ..errors import ApiError

    if not isinstance(items, list):
        raise ApiError("Request body must be a JSON array of events.", status_code=422,
                       errors={"json": {"_schema": ["Invalid input type: expected an array."]}})
    if not items:
        raise ApiError("Request body must contain at least one event.", status_code=422,
                       errors={"json": {"_schema": ["Length must be between 1 and 10000."]}})
    if len(items) > rules.MAX_EVENTS_PER_BATCH:
        raise ApiError(
            f"A batch holds at most {rules.MAX_EVENTS_PER_BATCH} events, got {len(items)}.", status_code=413
        )
    rows, errors = rules.validate_events(items)
    if errors:
        reject(len(items))
        first = min(errors)
        raise ApiError(
            f"{len(errors)} of {len(items)} events are invalid (first: event {first}); nothing was stored.",
            status_code=422,
            errors={"json": {str(index): fields for index, fields in errors.items()}},
        )
    return rows


class _KeyCleanup:
    """Deletes expired idempotency keys at most once a minute per process."""

    interval_seconds = 60.0

    def __init__(self) -> None:
        self._last = 0.0

    def maybe_run(self, connection: sa.Connection) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_seconds:
            self._last = now
            connection.exec_driver_sql("DELETE FROM processed_keys WHERE expires_at < now()")


_key_cleanup = _KeyCleanup()

# Batches up to this many events go through group commit when the caller passes a committer.
GROUP_COMMIT_MAX_BATCH = 100


def ingest_batch(
    engine: sa.Engine,
    items: Any,
    *,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    key_ttl_seconds: int = 24 * 3600,
    committer: GroupCommitter | None = None,
) -> IngestOutcome:
    """Validate and store one HTTP batch in one transaction; honour an Idempotency-Key.

    With a key, the key is locked for the transaction: a concurrent request with the same key gets 409,
    a completed one is replayed, and the key is recorded with the response in the same transaction as
    the events, so a crash leaves neither.
    """
    rows = validate_batch(items)
    # Small batches without a key share a transaction with other waiting requests (group commit); a
    # key's claim and record must share the events' own transaction, and a big batch is cheaper alone
    # (COPY and the plain INSERT of expect_new).
    if committer is not None and idempotency_key is None and len(rows) <= GROUP_COMMIT_MAX_BATCH:
        result = committer.submit(rows)
        return IngestOutcome(status_code=201 if result.duplicates == 0 else 200,
                             body={"ingested": result.ingested, "duplicates": result.duplicates})
    with engine.begin() as connection:
        if idempotency_key is not None:
            replay = _claim_key(connection, idempotency_key, fingerprint or "")
            if replay is not None:
                return replay
        result = write_events(connection, rows, expect_new=True)
        outcome = IngestOutcome(
            status_code=201 if result.duplicates == 0 else 200,
            body={"ingested": result.ingested, "duplicates": result.duplicates},
        )
        if idempotency_key is not None:
            connection.execute(
                sa.text(
                    """
                    INSERT INTO processed_keys (kind, key, fingerprint, status_code, result, expires_at)
                    VALUES ('http', :key, :fingerprint, :status, CAST(:result AS jsonb),
                            now() + make_interval(secs => :ttl))
                    ON CONFLICT (kind, key) DO UPDATE SET
                        fingerprint = EXCLUDED.fingerprint, status_code = EXCLUDED.status_code,
                        result = EXCLUDED.result, created_at = now(), expires_at = EXCLUDED.expires_at
                    """
                ),
                {
                    "key": idempotency_key,
                    "fingerprint": fingerprint or "",
                    "status": outcome.status_code,
                    "result": orjson.dumps(outcome.body).decode(),
                    "ttl": key_ttl_seconds,
                },
            )
            _key_cleanup.maybe_run(connection)
    return outcome


def _claim_key(connection: sa.Connection, key: str, fingerprint: str) -> IngestOutcome | None:
    from ..errors import ApiError

    locked = connection.execute(
        sa.text("SELECT pg_try_advisory_xact_lock(hashtextextended('http:' || :key, 0))"), {"key": key}
    ).scalar_one()
    if not locked:
        raise ApiError(
            "A request with this Idempotency-Key is still in progress; retry after it completes.",
            status_code=409,
            errors={"headers": {"Idempotency-Key": ["In use by a request in flight."]}},
        )
    stored = connection.execute(
        sa.text(
            "SELECT fingerprint, status_code, result FROM processed_keys "
            "WHERE kind = 'http' AND key = :key AND expires_at > now()"
        ),
        {"key": key},
    ).first()
    if stored is None:
        return None
    if stored.fingerprint != fingerprint:
        raise ApiError(
            "This Idempotency-Key was already used with a different request body.",
            status_code=422,
            errors={"headers": {"Idempotency-Key": ["Already used with a different request body."]}},
        )
    IDEMPOTENT_REPLAYS.inc()
    return IngestOutcome(status_code=stored.status_code, body=stored.result, replayed=True)
