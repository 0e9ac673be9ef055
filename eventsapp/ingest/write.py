"""The write core: the only code that inserts events. HTTP ingest (``ingest.service``), the CSV import
(``importer``) and the SDK endpoints all store events through ``write_events``.

A batch is COPYed into a per-connection staging table, then inserted from it in event_id order with its
rollup-outbox rows in the same transaction, so a committed event can never be missing from the rollups.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import sqlalchemy as sa
from prometheus_client import Counter, Histogram

from ..people.tombstones import NOT_TOMBSTONED  # deleted users' late retries are dropped (issue 15)
from . import rules

EVENTS_TOTAL = Counter("eventsapp_events_total", "Events handled by the write path, by result", ["result"])
BATCH_SIZE = Histogram(
    "eventsapp_batch_size_events",
    "Events per write batch",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
)

# A temp table lives as long as its connection; every commit empties it.
CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staging_events (
    event_id uuid NOT NULL,
    occurred_at timestamptz NOT NULL,
    user_id text NOT NULL,
    event_type text NOT NULL,
    properties jsonb NOT NULL
) ON COMMIT DELETE ROWS
"""

# Text format, not CSV: JSON is full of quotes that CSV would have to double (about half the
# serialisation time of a batch), while text format needs escaping only for rare characters.
COPY_STAGING = "COPY staging_events (event_id, occurred_at, user_id, event_type, properties) FROM STDIN"

# Both inserts go in event_id order: two writers whose batches share event_ids then wait on each other in
# one order, never in a cycle (a deadlock). Repeats inside a batch are gone already (first_of_each_id).
INSERT_FROM_STAGING = f"""
WITH inserted AS (
    INSERT INTO events (event_id, occurred_at, user_id, event_type, properties)
    SELECT event_id, occurred_at, user_id, event_type, properties FROM staging_events
    WHERE {NOT_TOMBSTONED}
    ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING occurred_at, user_id, event_type
), queued AS (
    INSERT INTO rollup_outbox (occurred_at, user_id, event_type)
    SELECT occurred_at, user_id, event_type FROM inserted
)
SELECT count(*) FROM inserted
"""

# When every event is expected to be new: a plain INSERT costs about a third less than ON CONFLICT's
# speculative insertion (measured: 0.30 vs 0.47 CPU-s per 100k). A unique violation sends the batch
# the ON CONFLICT way.
INSERT_NEW_FROM_STAGING = f"""
INSERT INTO events (event_id, occurred_at, user_id, event_type, properties)
SELECT event_id, occurred_at, user_id, event_type, properties FROM staging_events
WHERE {NOT_TOMBSTONED}
ORDER BY event_id
"""
QUEUE_NEW_FROM_STAGING = f"""
INSERT INTO rollup_outbox (occurred_at, user_id, event_type)
SELECT occurred_at, user_id, event_type FROM staging_events
WHERE {NOT_TOMBSTONED}
"""
UNIQUE_VIOLATION = "23505"


@dataclass(frozen=True)
class WriteResult:
    ingested: int
    duplicates: int


def _ensure_staging(connection: sa.Connection) -> None:
    # Not cached per connection: a rolled-back first transaction also rolls back the CREATE.
    connection.exec_driver_sql(CREATE_STAGING)


def _escape_copy_text(field: str) -> str:
    return field.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def rows_to_copy_text(rows: Sequence[rules.EventRow]) -> io.BytesIO:
    """The rows in COPY's text format (tab-separated, backslash escapes), UTF-8 encoded. Rows hold no
    NUL (the rules refuse it)."""
    data = "\n".join(map("\t".join, rows)).encode("utf-8")
    # Most batches need no escaping at all, which whole-batch counts prove at C speed; a tab or newline
    # inside a field shows up as a wrong count.
    if (data.count(b"\t") != 4 * len(rows) or data.count(b"\n") != len(rows) - 1
            or b"\\" in data or b"\r" in data):
        data = "\n".join(_copy_line(row) for row in rows).encode("utf-8")
    return io.BytesIO(data + b"\n")


def _copy_line(row: rules.EventRow) -> str:
    line = "\t".join(row)
    if line.count("\t") != 4 or "\\" in line or "\n" in line or "\r" in line:
        line = "\t".join(map(_escape_copy_text, row))
    return line


def first_of_each_id(rows: Sequence[rules.EventRow]) -> Sequence[rules.EventRow]:
    """The rows without later repeats of an event_id (the first wins), in their order."""
    firsts: dict[str, rules.EventRow] = {}
    keep = firsts.setdefault
    for row in rows:
        keep(row[0], row)
    return rows if len(firsts) == len(rows) else list(firsts.values())


def write_events(connection: sa.Connection, rows: Sequence[rules.EventRow], *,
                 expect_new: bool = False) -> WriteResult:
    """Store validated rows exactly once (by event_id) in the caller's transaction.

    Inserted events are queued in ``rollup_outbox`` in the same transaction, so analytics rollups
    can never miss a committed event. ``expect_new`` tries the cheaper plain INSERT first (under a
    savepoint) and falls back to ON CONFLICT when an event is already stored: use it when duplicates
    are unlikely, as in a first import.
    """
    if not rows:
        return WriteResult(0, 0)
    unique = first_of_each_id(rows)
    _ensure_staging(connection)
    with connection.connection.dbapi_connection.cursor() as cursor:
        # 1 MB pieces instead of 8 KB: fewer GIL hand-offs with a thread parsing the next batch.
        cursor.copy_expert(COPY_STAGING, rows_to_copy_text(unique), size=1 << 20)
    inserted = _insert_new(connection, len(unique)) if expect_new else None
    if inserted is None:
        inserted = connection.exec_driver_sql(INSERT_FROM_STAGING).scalar_one()
    # Empty the staging table now: the caller may write several batches in one transaction.
    connection.exec_driver_sql("TRUNCATE staging_events")
    result = WriteResult(ingested=inserted, duplicates=len(rows) - inserted)
    EVENTS_TOTAL.labels("ingested").inc(result.ingested)
    EVENTS_TOTAL.labels("duplicate").inc(result.duplicates)
    BATCH_SIZE.observe(len(rows))
    return result


def _insert_new(connection: sa.Connection, count: int) -> int | None:
    """Insert the staged rows with a plain INSERT; None (and nothing written) if one is already stored."""
    savepoint = connection.begin_nested()
    try:
        # rowcount, not ``count``: events of deleted users (tombstones) are not inserted.
        inserted = connection.exec_driver_sql(INSERT_NEW_FROM_STAGING).rowcount
    except sa.exc.IntegrityError as exc:
        savepoint.rollback()
        if getattr(exc.orig, "pgcode", None) != UNIQUE_VIOLATION:
            raise
        return None
    connection.exec_driver_sql(QUEUE_NEW_FROM_STAGING)
    savepoint.commit()
    return inserted


def reject(count: int) -> None:
    """Count events refused by validation."""
    EVENTS_TOTAL.labels("rejected").inc(count)


# Group commit (``ingest.groupcommit``) writes several requests' rows in one statement and must tell each
# request which of ITS events were stored, so it needs the inserted ids rather than a count. Its groups are
# small (a few single-event requests), so the rows go as five arrays in ONE statement instead of the
# staging table's four round trips (create, COPY, insert, truncate); the arrays are aliased as
# ``staging_events`` so that the tombstone filter (written against that name) applies unchanged.
# CAST, not ``:ids::uuid[]``: sa.text sees no bind in a name that ``::`` follows.
INSERT_ARRAYS_RETURNING_IDS = sa.text(f"""
WITH staging_events AS (
    SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:times AS timestamptz[]), CAST(:users AS text[]),
                         CAST(:types AS text[]), CAST(:properties AS jsonb[]))
        AS staging_events(event_id, occurred_at, user_id, event_type, properties)
), inserted AS (
    INSERT INTO events (event_id, occurred_at, user_id, event_type, properties)
    SELECT event_id, occurred_at, user_id, event_type, properties FROM staging_events
    WHERE {NOT_TOMBSTONED}
    ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, occurred_at, user_id, event_type
), queued AS (
    INSERT INTO rollup_outbox (occurred_at, user_id, event_type)
    SELECT occurred_at, user_id, event_type FROM inserted
)
SELECT event_id::text FROM inserted
""")


def write_events_returning_ids(connection: sa.Connection, rows: Sequence[rules.EventRow]) -> set[str]:
    """Store validated rows exactly once (as ``write_events``) and return the event_ids this call inserted."""
    if not rows:
        return set()
    unique = first_of_each_id(rows)
    ids, times, users, types, properties = (list(column) for column in zip(*unique))
    # psycopg2 sends each Python list as one array value; SQLAlchemy's error wrapping stays (an
    # OperationalError is a 503).
    inserted = set(connection.execute(INSERT_ARRAYS_RETURNING_IDS, {
        "ids": ids, "times": times, "users": users, "types": types, "properties": properties}).scalars())
    EVENTS_TOTAL.labels("ingested").inc(len(inserted))
    EVENTS_TOTAL.labels("duplicate").inc(len(rows) - len(inserted))
    BATCH_SIZE.observe(len(rows))
    return inserted
