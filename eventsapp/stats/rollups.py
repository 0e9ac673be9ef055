"""Analytics rollups, fed from ``rollup_outbox`` (filled by ``write_events`` in the writer's transaction).

``fold_outbox`` moves queued rows into the rollups; every stats read has the app's ``BackgroundFolder``
fold first (and waits for it, bounded), so answers include every committed event. ``rebuild_rollups``
recomputes them from ``events``; both give identical tables.

Tables (see models.py): per (UTC day, user) first/last event time, per user first event time, per
15-minute UTC bucket x event type counts — all timezone-free — and, for the project timezone recorded in
``rollup_meta``, per (local day, user) rows, per (local day, event type) counts and per-day DAU.
"""
from __future__ import annotations

import logging
import threading
import time

import sqlalchemy as sa

log = logging.getLogger(__name__)

# One folder at a time: a fold's upserts must not interleave with another fold or a rebuild.
FOLD_LOCK_KEY = 0x6576_656E_7473  # "events"

# Above this many folded rows, refresh planner statistics so reads keep their index plans.
ANALYZE_AFTER_ROWS = 20_000

ROLLUP_TABLES = (
    "rollup_user_day", "rollup_user_first", "rollup_type_quarter",
    "rollup_local_day_user", "rollup_local_day_type", "rollup_dau", "rollup_cohort_day",
)

QUARTER = "date_bin('15 minutes', occurred_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')"

# One statement, so the outbox rows it deletes are exactly the rows it adds. Each INSERT reads the
# moved rows pre-aggregated, and ON CONFLICT probes the primary key per row: no rollup table is scanned.
# DAU counters grow only by (local day, user) pairs that were new, which keeps them exact. The cohort
# counters grow by the new pairs under their user's first local day; a user whose first event moved to an
# earlier local day (a late event) takes every pair stored before from the old first day to the new one.
# Each (first_day, day) key gets one net change, applied by exactly one of cohort_up/down/gone.
FOLD_SQL = sa.text(f"""
WITH moved AS (
    DELETE FROM rollup_outbox RETURNING occurred_at, user_id, event_type
), batch_first AS (
    SELECT user_id, min(occurred_at) AS first_at FROM moved GROUP BY 1
), user_day AS (
    INSERT INTO rollup_user_day AS r (day, user_id, first_at, last_at)
    SELECT (occurred_at AT TIME ZONE 'UTC')::date, user_id, min(occurred_at), max(occurred_at)
    FROM moved GROUP BY 1, 2
    ON CONFLICT (day, user_id) DO UPDATE
        SET first_at = LEAST(r.first_at, EXCLUDED.first_at), last_at = GREATEST(r.last_at, EXCLUDED.last_at)
        WHERE EXCLUDED.first_at < r.first_at OR EXCLUDED.last_at > r.last_at
), firsts AS (
    -- Each user's first event before this statement (NULL: a new user) and with this batch; one probe
    -- of rollup_user_first per user serves the cohort counters and its own update below.
    SELECT b.user_id, b.first_at AS batch_at, f.first_at AS old_at,
           (LEAST(b.first_at, f.first_at) AT TIME ZONE :tz)::date AS new_d,
           (f.first_at AT TIME ZONE :tz)::date AS old_d
    FROM batch_first b LEFT JOIN rollup_user_first f ON f.user_id = b.user_id
), user_first AS (
    INSERT INTO rollup_user_first AS r (user_id, first_at)
    SELECT user_id, batch_at FROM firsts WHERE old_at IS NULL OR batch_at < old_at
    ON CONFLICT (user_id) DO UPDATE SET first_at = EXCLUDED.first_at WHERE EXCLUDED.first_at < r.first_at
), type_quarter AS (
    INSERT INTO rollup_type_quarter AS r (bucket, event_type, events)
    SELECT {QUARTER}, event_type, count(*) FROM moved GROUP BY 1, 2
    ON CONFLICT (bucket, event_type) DO UPDATE SET events = r.events + EXCLUDED.events
), local_type AS (
    INSERT INTO rollup_local_day_type AS r (day, event_type, events)
    SELECT (occurred_at AT TIME ZONE :tz)::date, event_type, count(*) FROM moved GROUP BY 1, 2
    ON CONFLICT (day, event_type) DO UPDATE SET events = r.events + EXCLUDED.events
), new_pairs AS (
    INSERT INTO rollup_local_day_user (day, user_id)
    SELECT DISTINCT (occurred_at AT TIME ZONE :tz)::date, user_id FROM moved
    ON CONFLICT DO NOTHING
    RETURNING day, user_id
), dau AS (
    INSERT INTO rollup_dau AS r (day, users)
    SELECT day, count(*) FROM new_pairs GROUP BY 1
    ON CONFLICT (day) DO UPDATE SET users = r.users + EXCLUDED.users
), cohort_delta AS (
    SELECT first_day, day, sum(n) AS n FROM (
        SELECT f.new_d AS first_day, p.day, 1 AS n FROM new_pairs p JOIN firsts f ON f.user_id = p.user_id
        UNION ALL
        SELECT d.first_day, p.day, d.n FROM firsts f
        CROSS JOIN LATERAL (VALUES (f.new_d, 1), (f.old_d, -1)) AS d(first_day, n)
        JOIN rollup_local_day_user p ON p.user_id = f.user_id
        WHERE f.new_d <> f.old_d
    ) AS changes GROUP BY 1, 2 HAVING sum(n) <> 0
), cohort_up AS (
    INSERT INTO rollup_cohort_day AS r (first_day, day, users)
    SELECT first_day, day, n FROM cohort_delta WHERE n > 0
    ON CONFLICT (first_day, day) DO UPDATE SET users = r.users + EXCLUDED.users
), cohort_down AS (
    UPDATE rollup_cohort_day r SET users = r.users + d.n FROM cohort_delta d
    WHERE d.n < 0 AND r.first_day = d.first_day AND r.day = d.day AND r.users + d.n > 0
), cohort_gone AS (
    DELETE FROM rollup_cohort_day r USING cohort_delta d
    WHERE d.n < 0 AND r.first_day = d.first_day AND r.day = d.day AND r.users + d.n <= 0
)
SELECT count(*) FROM moved
""")

# A rebuild fills each rollup with one INSERT … SELECT (hash aggregates over ``events``, or over a rollup
# filled before it), into tables without indexes: they are built afterwards, one sort each. Into indexed
# tables the same inserts took 3-4 times as long (1.1M (day, user) rows: 16 s instead of 4.6 s + 1 s).
# The two event-type rollups share one pass over ``events`` through a small temporary table.
REBUILD_SQL = {
    "rollup_user_day": """
        INSERT INTO rollup_user_day (day, user_id, first_at, last_at)
        SELECT (occurred_at AT TIME ZONE 'UTC')::date, user_id, min(occurred_at), max(occurred_at)
        FROM events GROUP BY 1, 2
    """,
    "rollup_user_first": """
        INSERT INTO rollup_user_first (user_id, first_at)
        SELECT user_id, min(first_at) FROM rollup_user_day GROUP BY 1
    """,
    "rebuild_type_counts": f"""
        CREATE TEMPORARY TABLE rebuild_type_counts ON COMMIT DROP AS
        SELECT {QUARTER} AS bucket, (occurred_at AT TIME ZONE :tz)::date AS day, event_type,
               count(*) AS events
        FROM events GROUP BY 1, 2, 3
    """,
    "rollup_type_quarter": """
        INSERT INTO rollup_type_quarter (bucket, event_type, events)
        SELECT bucket, event_type, sum(events) FROM rebuild_type_counts GROUP BY 1, 2
    """,
    "rollup_local_day_type": """
        INSERT INTO rollup_local_day_type (day, event_type, events)
        SELECT day, event_type, sum(events) FROM rebuild_type_counts GROUP BY 1, 2
    """,
    "rollup_local_day_user": """
        INSERT INTO rollup_local_day_user (day, user_id)
        SELECT DISTINCT (occurred_at AT TIME ZONE :tz)::date, user_id FROM events
    """,
    "rollup_dau": """
        INSERT INTO rollup_dau (day, users) SELECT day, count(*) FROM rollup_local_day_user GROUP BY 1
    """,
    "rollup_cohort_day": """
        INSERT INTO rollup_cohort_day (first_day, day, users)
        SELECT (f.first_at AT TIME ZONE :tz)::date, p.day, count(*)
        FROM rollup_local_day_user p JOIN rollup_user_first f ON f.user_id = p.user_id GROUP BY 1, 2
    """,
}
# The rollups' indexes and primary keys, as statements that drop and recreate them (whatever migrations
# added): building an index once after the load is several times cheaper than maintaining it per row.
REBUILD_INDEXES_SQL = """
SELECT CASE WHEN con.oid IS NULL THEN format('DROP INDEX %I', i.relname)
            ELSE format('ALTER TABLE %I DROP CONSTRAINT %I', t.relname, con.conname) END,
       CASE WHEN con.oid IS NULL THEN pg_get_indexdef(i.oid)
            ELSE format('ALTER TABLE %I ADD CONSTRAINT %I %s', t.relname, con.conname,
                        pg_get_constraintdef(con.oid)) END
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
LEFT JOIN pg_constraint con ON con.conindid = i.oid AND con.conrelid = t.oid AND con.contype IN ('p', 'u')
WHERE t.relname = ANY(:tables) AND t.relnamespace = current_schema()::regnamespace
ORDER BY con.oid IS NULL, i.relname
"""
# Memory for the rebuild's hash aggregates, sorts and index builds (this transaction only).
REBUILD_MEMORY = "SET LOCAL work_mem = '256MB'; SET LOCAL maintenance_work_mem = '256MB'"

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

    The local-day rollups keep the project timezone stored in ``rollup_meta`` (the database's, see
    ``project_timezone``). ``project_tz`` (default: the app's EVENTSAPP_TIMEZONE) is used only when none
    is stored yet; a different one is logged as a WARNING and ignored, never a reason to rebuild (changing
    it is ``rebuild_rollups`` with the new one: `flask rollups set-timezone`). Cheap when there is nothing
    to do: one query, no lock.
    ``analyze=False`` leaves refreshing planner statistics after a big fold to the caller (``analyze``).
    """
    meta_tz, queued = connection.exec_driver_sql(STATE_SQL).one()
    configured = project_tz or _app_timezone()
    if meta_tz is not None and not queued:
        project_timezone(meta_tz, configured)
        return 0
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": FOLD_LOCK_KEY})
    meta_tz = rollup_timezone(connection)  # another folder may have built them while we waited
    if meta_tz is None:
        if not _never_built(connection):
            # Rollups without a recorded timezone (rollup_meta emptied by hand) cannot be trusted: repair.
            return rebuild_rollups(connection, configured)
        # Every event ever committed is still queued (only folds and rebuilds empty the outbox, and both
        # record the timezone), so folding them into the empty rollups is a build. Unlike a rebuild, it
        # does not stop writers: a new database's first import would otherwise stall behind it.
        _record_timezone(connection, configured)
        meta_tz = configured
    meta_tz = project_timezone(meta_tz, configured)
    started = time.perf_counter()
    moved = connection.execute(FOLD_SQL, {"tz": meta_tz}).scalar_one()
    if analyze and moved >= ANALYZE_AFTER_ROWS:
        analyze_rollups(connection)
    # Checked by file size, not by this fold's count: an import folds in many small steps while it writes
    # (when the outbox is busy), and its last, small fold is the one that finds it idle.
    if moved and connection.exec_driver_sql("SELECT pg_relation_size('rollup_outbox')").scalar() > OUTBOX_TRUNCATE_BYTES:
        _truncate_outbox_if_idle(connection)
    if moved:
        log.debug("folded %d outbox rows in %.3f s", moved, time.perf_counter() - started)
    return moved


_mismatches_warned: set[tuple[str, str]] = set()


def project_timezone(stored: str | None, configured: str) -> str:
    """The project timezone: the one stored in the database wins over this process's EVENTSAPP_TIMEZONE.

    The rollups hold local days of one timezone for every process that shares the database, so a process
    started with another EVENTSAPP_TIMEZONE (an import run, a second server) must not impose its own: it
    logs a WARNING (once per process and pair) and uses the stored one.
    """
    if stored is None:
        return configured
    if stored != configured and (stored, configured) not in _mismatches_warned:
        _mismatches_warned.add((stored, configured))
        log.warning("EVENTSAPP_TIMEZONE is %s but the database's project timezone is %s; using %s "
                    "(change it with `flask rollups set-timezone TZ`)", configured, stored, stored)
    return stored


def rebuild_rollups(connection: sa.Connection, project_tz: str | None = None,
                    timings: dict[str, float] | None = None) -> int:
    """Recompute every rollup from ``events`` for ``project_tz`` (default: the app's); return events read.

    Set-based: the rollup tables are truncated and refilled by one INSERT … SELECT each (``REBUILD_SQL``),
    with their indexes and primary keys dropped before and built afterwards. ``timings`` (if given)
    receives seconds per step.

    Locks the outbox in SHARE mode: in-flight writers finish first and new ones wait until this
    transaction commits, so every event is either in the rebuilt tables or still queued, never both.
    Truncating locks the rollup tables: stats reads wait for the rebuild (up to their timeout, then 503)
    instead of seeing half-built tables. Nothing that holds a rollup table lock waits for the fold lock
    (readers wait for the background folder without locks; folds take the lock before touching them),
    so this cannot deadlock.
    """
    tz = project_tz or _app_timezone()
    timings = {} if timings is None else timings
    step = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal step
        now = time.perf_counter()
        timings[name] = now - step
        step = now

    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": FOLD_LOCK_KEY})
    connection.exec_driver_sql(REBUILD_MEMORY)
    connection.exec_driver_sql("LOCK TABLE rollup_outbox IN SHARE MODE")
    # The outbox is emptied row by row: TRUNCATE would wait for folders that read it before the fold lock.
    connection.exec_driver_sql("DELETE FROM rollup_outbox")
    connection.exec_driver_sql("TRUNCATE " + ", ".join(ROLLUP_TABLES))
    indexes = connection.execute(sa.text(REBUILD_INDEXES_SQL), {"tables": list(ROLLUP_TABLES)}).all()
    for drop, _ in indexes:
        connection.exec_driver_sql(drop)
    lap("empty")
    for table, statement in REBUILD_SQL.items():
        connection.execute(sa.text(statement), {"tz": tz})
        lap(table)
    for _, create in reversed(indexes):
        connection.exec_driver_sql(create)
    lap("build indexes")
    events = connection.exec_driver_sql("SELECT coalesce(sum(events), 0) FROM rebuild_type_counts").scalar()
    connection.exec_driver_sql("DROP TABLE rebuild_type_counts")
    _record_timezone(connection, tz)
    analyze_rollups(connection)
    lap("analyze")
    return events


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


# --- folding in the background --------------------------------------------------------------------


class FoldFailed(Exception):
    """The fold a reader waited for failed (the database went away, ...); the rows stay queued."""


class BackgroundFolder:
    """One folding thread per engine (so per app and process): readers ask it for a fold and wait, bounded.

    Readers used to fold themselves, without their statement timeout: with a large outbox every waitress
    thread sat in the same fold (or waited for its lock) for as long as it took. Now one thread folds,
    readers wait at most until their deadline, and nothing else (ingest, /health) ever waits for a fold.
    Across processes the advisory lock in ``fold_outbox`` still lets only one fold run at a time.

    A reader's ticket is served by a fold pass that starts after the ticket was taken, so that pass sees
    every event committed before the reader asked: answers never miss an acknowledged event.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.configured_tz = "UTC"
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._failed_through = 0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def catch_up(self, configured_tz: str, deadline: float) -> bool:
        """Wait until every outbox row queued before this call is folded: True, or False at ``deadline``
        (``time.monotonic()``). Raise FoldFailed when that fold failed."""
        with self._cond:
            self.configured_tz = configured_tz
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="rollup-folder", daemon=True)
                self._thread.start()
            self._requested += 1
            ticket = self._requested
            self._cond.notify_all()
            while self._completed < ticket:
                if self._failed_through >= ticket:
                    raise FoldFailed(str(self._error))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._requested <= max(self._completed, self._failed_through):
                    self._cond.wait()
                target, configured_tz = self._requested, self.configured_tz
            try:
                with self.engine.connect() as connection:
                    with connection.begin():
                        moved = fold_outbox(connection, configured_tz, analyze=False)
                    with self._cond:
                        self._completed = target
                        self._cond.notify_all()
                    if moved >= ANALYZE_AFTER_ROWS:  # after the readers are let go: they need not wait for it
                        with connection.begin():
                            analyze_rollups(connection)
            except Exception as exc:  # noqa: BLE001 - handed to the waiting readers, who answer 503
                log.warning("folding the rollup outbox failed; the rows stay queued", exc_info=True)
                with self._cond:
                    if self._completed < target:
                        self._failed_through, self._error = target, exc
                    self._cond.notify_all()


_folders: dict[sa.Engine, BackgroundFolder] = {}  # engines live as long as their app
_folders_lock = threading.Lock()


def background_folder(engine: sa.Engine) -> BackgroundFolder:
    """The folding thread of ``engine`` (made on first use)."""
    with _folders_lock:
        folder = _folders.get(engine)
        if folder is None:
            folder = _folders[engine] = BackgroundFolder(engine)
        return folder
