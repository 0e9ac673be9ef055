"""A user's summary and timeline, and deletion on request. Functions take a connection first."""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Sequence

import sqlalchemy as sa

from ..stats.rollups import FOLD_LOCK_KEY, QUARTER, fold_outbox
from .params import LocalRange
from .tombstones import user_hash

UTC = timezone.utc


class UnknownUser(LookupError):
    """No stored event has this user_id."""


class BadCursor(ValueError):
    """A timeline cursor this server did not hand out."""


# --- reading --------------------------------------------------------------------------------------

SUMMARY_SQL = sa.text(
    "SELECT event_type, count(*) AS n, min(occurred_at) AS first_at, max(occurred_at) AS last_at "
    "FROM events WHERE user_id = :user_id GROUP BY event_type"
)


def user_summary(connection: sa.Connection, user_id: str) -> dict[str, Any]:
    """First and last event time, event count and count per event type of ``user_id``."""
    rows = connection.execute(SUMMARY_SQL, {"user_id": user_id}).all()
    if not rows:
        raise UnknownUser(user_id)
    # Most frequent first, then by name, so the answer reads like a top list and is stable.
    rows.sort(key=lambda row: (-row.n, row.event_type))
    return {
        "user_id": user_id,
        "first_seen": min(row.first_at for row in rows),
        "last_seen": max(row.last_at for row in rows),
        "events": sum(row.n for row in rows),
        "event_types": {row.event_type: row.n for row in rows},
    }


def encode_cursor(occurred_at: datetime, event_id: str) -> str:
    text = f"{occurred_at.astimezone(UTC).isoformat()}|{event_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, event_id = text.split("|")
        occurred_at = datetime.fromisoformat(at)
        if occurred_at.tzinfo is None or len(event_id) != 36:
            raise ValueError(text)
        return occurred_at, event_id
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadCursor(cursor) from None


@dataclass(frozen=True)
class TimelinePage:
    events: list[dict[str, Any]]
    next_cursor: str | None


def user_events(connection: sa.Connection, user_id: str, *, local: LocalRange | None = None,
                event_type: str | None = None, limit: int = 100, cursor: str | None = None,
                tz: str = "UTC") -> TimelinePage:
    """One page of ``user_id``'s events (on the local dates of ``local``), newest first, after ``cursor``.

    Keyset pagination on (occurred_at, event_id): a page starts strictly after the last row of the one
    before, so events arriving meanwhile never shift or repeat rows; one older than the cursor (a late
    event) shows up on a later page, where its time puts it. ``occurred_at`` is given in ``tz``, with the
    offset PostgreSQL gives that instant there.
    """
    params: dict[str, Any] = {"user_id": user_id, "limit": limit + 1, "tz": tz}
    conditions = ["user_id = :user_id"]
    if cursor is not None:
        params["c_at"], params["c_id"] = decode_cursor(cursor)
        conditions.append("(occurred_at, event_id) < (:c_at, CAST(:c_id AS uuid))")
    if local is not None:
        conditions.append(local.sql(params))
    if event_type is not None:
        conditions.append("event_type = :event_type")
        params["event_type"] = event_type
    rows = connection.execute(sa.text(
        "SELECT event_id::text AS event_id, occurred_at, event_type, properties, "
        "occurred_at AT TIME ZONE :tz AS local_at, "
        "extract(epoch FROM (occurred_at AT TIME ZONE :tz) - (occurred_at AT TIME ZONE 'UTC'))::int AS offset_s "
        f"FROM events WHERE {' AND '.join(conditions)} ORDER BY occurred_at DESC, event_id DESC LIMIT :limit"
    ), params).all()
    if not rows and cursor is None and not _known(connection, user_id):
        raise UnknownUser(user_id)
    more = len(rows) > limit
    rows = rows[:limit]
    events = [{"event_id": row.event_id,
               "occurred_at": row.local_at.replace(tzinfo=timezone(timedelta(seconds=row.offset_s))),
               "user_id": user_id, "event_type": row.event_type, "properties": row.properties}
              for row in rows]
    next_cursor = encode_cursor(rows[-1].occurred_at, rows[-1].event_id) if more else None
    return TimelinePage(events, next_cursor)


def _known(connection: sa.Connection, user_id: str) -> bool:
    return connection.execute(sa.text("SELECT EXISTS (SELECT 1 FROM events WHERE user_id = :u)"),
                              {"u": user_id}).scalar_one()


# --- deletion -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Deletion:
    user_id: str
    events_deleted: int
    deleted_at: datetime
    found: bool


# The users' events go, and every rollup row they contributed to is decremented or, when nothing else
# holds it up, removed: the tables end up as a rebuild from the remaining events would make them (rows
# with a zero count never exist there). One statement for many users (a bulk request costs a few round
# trips per few hundred users). Runs after fold_outbox, so every one of these events is in the rollups and
# nothing is queued. ``:tz`` is the project timezone the local-day rollups hold.
DELETE_SQL = sa.text(f"""
WITH gone AS (
    DELETE FROM events WHERE user_id = ANY(:user_ids) RETURNING user_id, occurred_at, event_type
), by_quarter AS (
    SELECT {QUARTER} AS bucket, event_type, count(*) AS n FROM gone GROUP BY 1, 2
), quarter_down AS (
    UPDATE rollup_type_quarter r SET events = r.events - g.n FROM by_quarter g
    WHERE r.bucket = g.bucket AND r.event_type = g.event_type AND r.events > g.n
), quarter_gone AS (
    DELETE FROM rollup_type_quarter r USING by_quarter g
    WHERE r.bucket = g.bucket AND r.event_type = g.event_type AND r.events <= g.n
), by_local_type AS (
    SELECT (occurred_at AT TIME ZONE :tz)::date AS day, event_type, count(*) AS n FROM gone GROUP BY 1, 2
), local_type_down AS (
    UPDATE rollup_local_day_type r SET events = r.events - g.n FROM by_local_type g
    WHERE r.day = g.day AND r.event_type = g.event_type AND r.events > g.n
), local_type_gone AS (
    DELETE FROM rollup_local_day_type r USING by_local_type g
    WHERE r.day = g.day AND r.event_type = g.event_type AND r.events <= g.n
), local_days AS (
    DELETE FROM rollup_local_day_user WHERE user_id = ANY(:user_ids) RETURNING day, user_id
), by_cohort AS (
    -- rollup_user_first as it was before this statement (its rows go below)
    SELECT (f.first_at AT TIME ZONE :tz)::date AS first_day, l.day, count(*) AS n
    FROM local_days l JOIN rollup_user_first f ON f.user_id = l.user_id GROUP BY 1, 2
), cohort_down AS (
    UPDATE rollup_cohort_day r SET users = r.users - c.n FROM by_cohort c
    WHERE r.first_day = c.first_day AND r.day = c.day AND r.users > c.n
), cohort_gone AS (
    DELETE FROM rollup_cohort_day r USING by_cohort c
    WHERE r.first_day = c.first_day AND r.day = c.day AND r.users <= c.n
), by_day AS (
    SELECT day, count(*) AS n FROM local_days GROUP BY 1
), dau_down AS (
    UPDATE rollup_dau r SET users = r.users - d.n FROM by_day d WHERE r.day = d.day AND r.users > d.n
), dau_gone AS (
    DELETE FROM rollup_dau r USING by_day d WHERE r.day = d.day AND r.users <= d.n
), user_days AS (
    -- By its primary key (day, user_id): the days come from the deleted events.
    DELETE FROM rollup_user_day r
    USING (SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date AS day, user_id FROM gone) d
    WHERE r.day = d.day AND r.user_id = d.user_id
), user_first AS (
    DELETE FROM rollup_user_first WHERE user_id = ANY(:user_ids)
)
SELECT user_id, count(*) FROM gone GROUP BY 1
""")

# CAST, not ``:hashes::bytea[]``: sa.text sees no bind in a name that ``::`` follows.
TOMBSTONES_SQL = sa.text(
    "INSERT INTO user_tombstones (user_hash, deleted_at) SELECT h, :at FROM unnest(CAST(:hashes AS bytea[])) h "
    "ON CONFLICT (user_hash) DO UPDATE SET deleted_at = GREATEST(user_tombstones.deleted_at, EXCLUDED.deleted_at)"
)
AUDIT_SQL = sa.text(
    "INSERT INTO deletion_audit (user_hash, requested_by, deleted_at, events_deleted, found) "
    "SELECT h, :by, :at, n, n > 0 FROM unnest(CAST(:hashes AS bytea[]), CAST(:counts AS bigint[])) AS t(h, n)"
)


def delete_users(connection: sa.Connection, user_ids: Sequence[str], *, requested_by: str,
                 project_tz: str) -> list[Deletion]:
    """Delete every event of each user, fix the rollups, keep tombstones and audit rows; caller's transaction.

    Writers are held off for the transaction (SHARE ROW EXCLUSIVE on ``events``: in-flight batches
    commit first and are deleted too; later ones wait, then see the tombstone and drop what is older).
    Two deletions queue behind each other the same way. Users without events are answered as not found,
    but still get a tombstone and an audit row: the request was made.
    """
    user_ids = list(dict.fromkeys(user_ids))
    connection.exec_driver_sql("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
    # The fold lock to the end of the transaction: no fold or rebuild may touch the rollups meanwhile.
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": FOLD_LOCK_KEY})
    # Queued rows go into the rollups first, so DELETE_SQL can take each deleted event's share out of them.
    fold_outbox(connection, project_tz)
    tz = _rollup_timezone(connection) or project_tz
    deleted_at = connection.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
    counts = dict(connection.execute(DELETE_SQL, {"user_ids": user_ids, "tz": tz}).all())
    hashes = [user_hash(user_id) for user_id in user_ids]
    numbers = [counts.get(user_id, 0) for user_id in user_ids]
    connection.execute(TOMBSTONES_SQL, {"hashes": hashes, "at": deleted_at})
    connection.execute(AUDIT_SQL, {"hashes": hashes, "counts": numbers, "by": requested_by, "at": deleted_at})
    return [Deletion(user_id, count, deleted_at, count > 0) for user_id, count in zip(user_ids, numbers)]


def _rollup_timezone(connection: sa.Connection) -> str | None:
    return connection.exec_driver_sql("SELECT project_tz FROM rollup_meta WHERE id = 1").scalar()


def read_user_ids(lines: Iterable[str]) -> list[str]:
    """The user_ids of a deletion request file: one per line, surrounding blanks and empty lines ignored,
    repeats once, in file order."""
    seen: dict[str, None] = {}
    for line in lines:
        user_id = line.strip()
        if user_id:
            seen.setdefault(user_id, None)
    return list(seen)
