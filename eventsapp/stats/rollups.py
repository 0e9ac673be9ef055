"""Analytics rollups, fed from ``rollup_outbox`` (filled by ``write_events`` in the writer's transaction).

``fold_outbox`` moves queued rows into the rollups; every stats read calls it first, so answers include
every committed event. ``rebuild_rollups`` recomputes them from ``events``; both give identical tables.

Tables (see models.py): per (UTC day, user) first/last event time, per user first event time, per
15-minute UTC bucket x event type counts — all timezone-free — and, for the project timezone recorded in
``rollup_meta``, per (local day, user) rows, per (local day, event type) counts and per-day DAU.
"""
from __future__ import annotations

import logging
import time

import sqlalchemy as sa

log = logging.getLogger(__name__)

# One folder at a time: a fold's upserts must not interleave with another fold or a rebuild.
FOLD_LOCK_KEY = 0x6576_656E_7473  # "events"

# Above this many folded rows, refresh planner statistics so reads keep their index plans.
ANALYZE_AFTER_ROWS = 20_000

ROLLUP_TABLES = (
    "rollup_user_day", "rollup_user_first", "rollup_type_quarter",
    "rollup_local_day_user", "rollup_local_day_type", "rollup_dau",
)

QUARTER = "date_bin('15 minutes', occurred_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')"

# One statement, so the outbox rows it deletes are exactly the rows it adds. Each INSERT reads the
# moved rows pre-aggregated, and ON CONFLICT probes the primary key per row: no rollup table is scanned.
# DAU counters grow only by (local day, user) pairs that were new, which keeps them exact.
FOLD_SQL = f"""
WITH moved AS (
    DELETE FROM rollup_outbox RETURNING occurred_at, user_id, event_type
), user_day AS (
    INSERT INTO rollup_user_day AS r (day, user_id, first_at, last_at)
    SELECT (occurred_at AT TIME ZONE 'UTC')::date, user_id, min(occurred_at), max(occurred_at)
    FROM moved GROUP BY 1, 2
    ON CONFLICT (day, user_id) DO UPDATE
        SET first_at = LEAST(r.first_at, EXCLUDED.first_at), last_at = GREATEST(r.last_at, EXCLUDED.last_at)
        WHERE EXCLUDED.first_at < r.first_at OR EXCLUDED.last_at > r.last_at
), user_first AS (
    INSERT INTO rollup_user_first AS r (user_id, first_at)
    SELECT user_id, min(occurred_at) FROM moved GROUP BY 1
    ON CONFLICT (user_id) DO UPDATE SET first_at = EXCLUDED.first_at WHERE EXCLUDED.first_at < r.first_at
), type_quarter AS (
    INSERT INTO rollup_type_quarter AS r (bucket, event_type, events)
    SELECT {QUARTER}, event_type, count(*) FROM moved GROUP BY 1, 2
    ON CONFLICT (bucket, event_type) DO UPDATE SET events = r.events + EXCLUDED.events
), local_type AS (
    INSERT INTO rollup_local_day_type AS r (day, event_type, events)
    SELECT (occurred_at AT TIME ZONE %(tz)s)::date, event_type, count(*) FROM moved GROUP BY 1, 2
    ON CONFLICT (day, event_type) DO UPDATE SET events = r.events + EXCLUDED.events
), new_pairs AS (
    INSERT INTO rollup_local_day_user (day, user_id)
    SELECT DISTINCT (occurred_at AT TIME ZONE %(tz)s)::date, user_id FROM moved
    ON CONFLICT DO NOTHING
    RETURNING day
), dau AS (
    INSERT INTO rollup_dau AS r (day, users)
    SELECT day, count(*) FROM new_pairs GROUP BY 1
    ON CONFLICT (day) DO UPDATE SET users = r.users + EXCLUDED.users
)
SELECT count(*) FROM moved
"""

REBUILD_SQL = (
    """
    INSERT INTO rollup_user_day (day, user_id, first_at, last_at)
    SELECT (occurred_at AT TIME ZONE 'UTC')::date, user_id, min(occurred_at), max(occurred_at)
    FROM events GROUP BY 1, 2
    """,
    "INSERT INTO rollup_user_first (user_id, first_at) SELECT user_id, min(occurred_at) FROM events GROUP BY 1",
    f"""
    INSERT INTO rollup_type_quarter (bucket, event_type, events)
    SELECT {QUARTER}, event_type, count(*) FROM events GROUP BY 1, 2
    """,
    """
    INSERT INTO rollup_local_day_type (day, event_type, events)
    SELECT (occurred_at AT TIME ZONE %(tz)s)::date, event_type, count(*) FROM events GROUP BY 1, 2
    """,
    """
    INSERT INTO rollup_local_day_user (day, user_id)
    SELECT DISTINCT (occurred_at AT TIME ZONE %(tz)s)::date, user_id FROM events
    """,
    "INSERT INTO rollup_dau (day, users) SELECT day, count(*) FROM rollup_local_day_user GROUP BY 1",
)

# Dead outbox rows past this size are worth replacing by an empty file (see _truncate_outbox_if_idle).
OUTBOX_TRUNCATE_BYTES = 1 << 20
STATE_SQL = "SELECT (SELECT project_tz FROM rollup_meta WHERE id = 1), EXISTS (SELECT 1 FROM rollup_outbox)"


def _app_timezone() -> str:
    from flask import current_app, has_app_context

    if has_app_context():
        return current_app.config.get("EVENTSAPP_TIMEZONE") or "UTC"
    return "UTC"


def rollup_timezone(connection: sa.Connection) -> str | None:
    """The project timezone the local-day rollups hold, or None before the first build."""
    return connection.exec_driver_sql("SELECT project_tz FROM rollup_meta WHERE id = 1").scalar()


def fold_outbox(connection: sa.Connection, project_tz: str | None = None, *, analyze: bool = True) -> int:
    """Fold queued outbox rows into the rollups in the caller's transaction; return how many were folded.

    ``project_tz`` (default: the timezone the rollups were built for, else the app's
    EVENTSAPP_TIMEZONE) decides the local-day rollups; when it differs from the one they hold, they are
    rebuilt from ``events`` instead. Cheap when there is nothing to do: one query, no lock.
    ``analyze=False`` leaves refreshing planner statistics after a big fold to the caller (``analyze``).
    """
    meta_tz, queued = connection.exec_driver_sql(STATE_SQL).one()
    wanted = project_tz or meta_tz or _app_timezone()
    if meta_tz == wanted and not queued:
        return 0
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": FOLD_LOCK_KEY})
    meta_tz = rollup_timezone(connection)  # another folder may have rebuilt while we waited
    if meta_tz is None and _never_built(connection):
        # Every event ever committed is still queued (only folds and rebuilds empty the outbox, and both
        # record the timezone), so folding them into the empty rollups is a build. Unlike a rebuild, it
        # does not stop writers: a new database's first import would otherwise stall behind it.
        _record_timezone(connection, wanted)
        meta_tz = wanted
    if meta_tz != wanted:
        return rebuild_rollups(connection, wanted)
    started = time.perf_counter()
    moved = connection.exec_driver_sql(FOLD_SQL, {"tz": meta_tz}).scalar_one()
    if analyze and moved >= ANALYZE_AFTER_ROWS:
        analyze_rollups(connection)
    # Checked by file size, not by this fold's count: an import folds in many small steps while it writes
    # (when the outbox is busy), and its last, small fold is the one that finds it idle.
    if moved and connection.exec_driver_sql("SELECT pg_relation_size('rollup_outbox')").scalar() > OUTBOX_TRUNCATE_BYTES:
        _truncate_outbox_if_idle(connection)
    if moved:
        log.debug("folded %d outbox rows in %.3f s", moved, time.perf_counter() - started)
    return moved


def rebuild_rollups(connection: sa.Connection, project_tz: str | None = None) -> int:
    """Recompute every rollup from ``events`` for ``project_tz`` (default: the app's); return events read.

    Locks the outbox in SHARE mode: in-flight writers finish first and new ones wait until this
    transaction commits, so every event is either in the rebuilt tables or still queued, never both.
    Readers are not blocked (rows are deleted, not truncated): a reader holding a table lock while it
    waits for the fold lock must never wait on us in turn (that was a deadlock).
    """
    tz = project_tz or _app_timezone()
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": FOLD_LOCK_KEY})
    connection.exec_driver_sql("LOCK TABLE rollup_outbox IN SHARE MODE")
    for table in ("rollup_outbox",) + ROLLUP_TABLES:
        connection.exec_driver_sql(f"DELETE FROM {table}")
    for statement in REBUILD_SQL:
        connection.exec_driver_sql(statement, {"tz": tz})
    _record_timezone(connection, tz)
    analyze_rollups(connection)
    return connection.exec_driver_sql("SELECT coalesce(sum(events), 0) FROM rollup_local_day_type").scalar_one()


def _record_timezone(connection: sa.Connection, tz: str) -> None:
    connection.execute(
        sa.text(
            "INSERT INTO rollup_meta (id, project_tz, built_at) VALUES (1, :tz, now()) "
            "ON CONFLICT (id) DO UPDATE SET project_tz = EXCLUDED.project_tz, built_at = EXCLUDED.built_at"
        ),
        {"tz": tz},
    )


def _never_built(connection: sa.Connection) -> bool:
    """True when every rollup table is empty (as after the migrations)."""
    probes = " AND ".join(f"NOT EXISTS (SELECT 1 FROM {table})" for table in ROLLUP_TABLES)
    return connection.exec_driver_sql(f"SELECT {probes}").scalar()


def _truncate_outbox_if_idle(connection: sa.Connection) -> None:
    """After a big fold, replace the outbox's dead rows by an empty file when no writer is using it.

    Until autovacuum runs, every "is anything queued?" check of a read would otherwise walk the dead rows
    of the rows just folded (about 20 ms after a 1M-event import). NOWAIT: never wait for a writer.
    """
    savepoint = connection.begin_nested()
    try:
        connection.exec_driver_sql("LOCK TABLE rollup_outbox IN ACCESS EXCLUSIVE MODE NOWAIT")
    except sa.exc.OperationalError:
        savepoint.rollback()
        return
    if not connection.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM rollup_outbox)").scalar():
        connection.exec_driver_sql("TRUNCATE rollup_outbox")
    savepoint.commit()


def analyze_rollups(connection: sa.Connection) -> None:
    """Refresh the planner's statistics of the rollup tables, so reads keep their index plans."""
    connection.exec_driver_sql("ANALYZE " + ", ".join(ROLLUP_TABLES))
