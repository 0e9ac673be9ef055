"""Read side of the analytics: one function per question, each taking a connection first.

Routing, per request: project timezone and no segment → the project-timezone rollups (a few hundred
rows at most); another timezone, no segment → the timezone-free rollups (per user and UTC day first/last
event time, per user first event, per 15-minute bucket counts), which are exact for any timezone whose
local days (or windows) touch a UTC day boundary or are aligned to a quarter hour; otherwise (segments, or
a timezone the rollups cannot answer exactly) a scan of ``events`` that computes the local date of each
event with ``AT TIME ZONE``.
"""
from __future__ import annotations

import time as time_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import psycopg2.errors
import sqlalchemy as sa

from ..database import primary_wal_lsn, wait_for_replay
from ..errors import ApiError
from .rollups import STATE_SQL, FoldFailed, background_folder, project_timezone, rollup_timezone
from .schemas import Segment

UTC = timezone.utc
QUERY_RETRY_AFTER_SECONDS = 5
WORK_MEM = "64MB"
T = TypeVar("T")


@dataclass(frozen=True)
class Scope:
    """Where a question is asked: its timezone, the project timezone the rollups hold, and its filters."""

    tz: str
    rollup_tz: str
    segments: tuple[Segment, ...] = ()

    @property
    def project_rollups(self) -> bool:
        return not self.segments and self.tz == self.rollup_tz


def run_read(engine: sa.Engine, question: Callable[..., T], *, project_tz: str, timeout_ms: int,
             tz: str | None = None, segment: Sequence[Segment] = (),
             analytics_engine: sa.Engine | None = None, **arguments: Any) -> T:
    """Bring the rollups up to date (read-your-writes), then answer ``question`` under a statement timeout.

    ``engine`` is the primary: queued outbox rows are folded there by the app's background folder, which
    the read waits for. With ``analytics_engine`` (a hot standby) the read then waits until the standby has
    replayed the primary's WAL position taken after that fold, and runs there. Each wait ends at
    ``timeout_ms`` from the start: then 503 with Retry-After, never an answer missing acknowledged events.
    ``project_tz`` (EVENTSAPP_TIMEZONE) counts only until the database has a project timezone stored.
    The common case (nothing queued, no standby) costs one extra statement in the read's own transaction.
    """
    deadline = time_module.monotonic() + timeout_ms / 1000
    # Enough memory that a DISTINCT over a month of (day, user) pairs is hashed in memory, not on disk.
    timeout_sql = f"SET LOCAL statement_timeout = {int(timeout_ms)}; SET LOCAL work_mem = '{WORK_MEM}'; "
    try:
        with engine.connect() as connection:
            connection.begin()
            meta_tz, queued = connection.exec_driver_sql(timeout_sql + STATE_SQL).one()
            if queued or meta_tz is None:
                connection.commit()
                _wait(background_folder(engine).catch_up(project_tz, deadline), timeout_ms,
                      "folding the events queued for the rollups")
                connection.begin()
                connection.exec_driver_sql(timeout_sql)
                meta_tz = rollup_timezone(connection)
            stored_tz = project_timezone(meta_tz, project_tz)
            scope = Scope(tz=tz or stored_tz, rollup_tz=stored_tz, segments=tuple(segment))
            if analytics_engine is None:
                answer = question(connection, scope, **arguments)
                connection.commit()
                return answer
            lsn = primary_wal_lsn(connection)
            connection.commit()
        with analytics_engine.connect() as connection:
            connection.begin()
            connection.exec_driver_sql(timeout_sql)
            _wait(wait_for_replay(connection, lsn, deadline), timeout_ms, "the analytics replica to catch up")
            answer = question(connection, scope, **arguments)
            connection.commit()
            return answer
    except FoldFailed:
        raise ApiError("The analytics rollups could not be brought up to date; retry later.", status_code=503,
                       headers={"Retry-After": str(QUERY_RETRY_AFTER_SECONDS)}) from None
    except sa.exc.OperationalError as exc:
        if isinstance(exc.orig, psycopg2.errors.QueryCanceled):
            raise ApiError(
                f"The query took longer than {timeout_ms} ms and was cancelled; narrow the range or retry later.",
                status_code=503, headers={"Retry-After": str(QUERY_RETRY_AFTER_SECONDS)},
            ) from None
        if isinstance(exc.orig, psycopg2.errors.SerializationFailure):  # a standby's replay cancelled it
            raise ApiError("The analytics replica cancelled the query (conflict with replication); retry later.",
                           status_code=503, headers={"Retry-After": str(QUERY_RETRY_AFTER_SECONDS)}) from None
        raise


def _wait(done: bool, timeout_ms: int, what: str) -> None:
    """503 with Retry-After when a bounded wait ran out: the answer would miss acknowledged events."""
    if not done:
        raise ApiError(f"Waited {timeout_ms} ms for {what}; retry later.", status_code=503,
                       headers={"Retry-After": str(QUERY_RETRY_AFTER_SECONDS)})


# --- time helpers ---------------------------------------------------------------------------------


def day_start(day: date, tz: str) -> datetime:
    """The first instant (UTC) of local date ``day`` in ``tz`` (a midnight skipped by DST starts it later)."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(tz)).astimezone(UTC)


@dataclass(frozen=True)
class Interval:
    """Instants [start, end) and the UTC dates they touch, [first_utc_day, last_utc_day]."""

    start: datetime
    end: datetime

    @property
    def first_utc_day(self) -> date:
        return self.start.date()

    @property
    def last_utc_day(self) -> date:
        return (self.end - timedelta(microseconds=1)).date()

    @property
    def inside_one_utc_day(self) -> bool:
        """True when neither end is a UTC midnight and both fall in the same UTC day: first/last event
        times per UTC day cannot tell whether a user was active in such a middle slice."""
        midnight = time(0)
        return (self.first_utc_day == self.last_utc_day and self.start.timetz().replace(tzinfo=None) != midnight
                and self.end.timetz().replace(tzinfo=None) != midnight)


def local_days(first: date, count: int, step: int, tz: str) -> list[Interval]:
    """``count`` consecutive spans of ``step`` local days from ``first``, as UTC instants."""
    starts = [day_start(first + timedelta(days=i * step), tz) for i in range(count + 1)]
    return [Interval(starts[i], starts[i + 1]) for i in range(count)]


def _quarter_aligned(*instants: datetime) -> bool:
    return all(int(instant.timestamp()) % 900 == 0 and instant.microsecond == 0 for instant in instants)


def _segment_sql(segments: Sequence[Segment], params: dict[str, Any]) -> str:
    parts = ["TRUE"]
    for i, segment in enumerate(segments):
        params[f"seg{i}"] = segment.value
        if segment.kind == "event_type":
            parts.append(f"event_type = %(seg{i})s")
        else:
            params[f"segkey{i}"] = segment.key
            parts.append(f"properties ->> %(segkey{i})s = %(seg{i})s")
    return " AND ".join(parts)


def _events_in(first: date, last: date, scope: Scope, params: dict[str, Any]) -> str:
    """WHERE clause: events whose local date in ``scope.tz`` is in [first, last], matching the segments."""
    params.update(tz=scope.tz, first=first, last=last,
                  start=day_start(first, scope.tz), end=day_start(last + timedelta(days=1), scope.tz))
    # The instant range lets the index narrow the scan; the local date check is the definition.
    return (
        "occurred_at >= %(start)s AND occurred_at < %(end)s"
        " AND (occurred_at AT TIME ZONE %(tz)s)::date BETWEEN %(first)s AND %(last)s AND "
        + _segment_sql(scope.segments, params)
    )


# The local dates a user was active on during one UTC day are exactly the local dates of their first and
# last event that day, as long as at most one local midnight falls inside that UTC day and no local day
# touches three UTC days: ``utc_day_splits`` checks this and returns None (callers scan ``events``).


# --- DAU ------------------------------------------------------------------------------------------


def daily_active_users(connection: sa.Connection, scope: Scope, *, from_: date, to: date) -> list[dict]:
    """Return ``[{"date", "dau"}]`` for every local date in [from_, to], zero-filled: distinct users with at
    least one matching event that day."""
    days = (to - from_).days + 1
    intervals = local_days(from_, days, 1, scope.tz)
    params: dict[str, Any] = {"first": from_, "last": to}
    if scope.project_rollups:
        sql = "SELECT day, users FROM rollup_dau WHERE day BETWEEN %(first)s AND %(last)s"
    elif not scope.segments and (splits := utc_day_splits(from_, to, scope.tz)) is not None:
        return _dau_from_utc_days(connection, from_, to, splits)
    else:
        where = _events_in(from_, to, scope, params)
        sql = f"""
            SELECT day, count(*) FROM (
                SELECT DISTINCT (occurred_at AT TIME ZONE %(tz)s)::date AS day, user_id FROM events WHERE {where}
            ) AS pairs GROUP BY day
        """
    counts = dict(connection.exec_driver_sql(sql, params).all())
    return [{"date": from_ + timedelta(days=i), "dau": counts.get(from_ + timedelta(days=i), 0)}
            for i in range(days)]


@dataclass(frozen=True)
class UtcDaySplit:
    """How one UTC day falls on local dates: instants before ``t`` are on ``before``, the rest on ``after``.

    A UTC day with no local midnight inside it has ``t`` at its own midnight (all of it is on ``after``).
    """

    day: date
    t: datetime
    before: date
    after: date
    whole: bool


def utc_day_splits(first: date, last: date, tz: str) -> list[UtcDaySplit] | None:
    """The splits of the UTC days that the local dates [first, last] touch (plus one on each side), or None
    when some local day touches three UTC days or none of their midnights (then the per-UTC-day rollup
    cannot answer exactly)."""
    zone = ZoneInfo(tz)
    for interval in local_days(first - timedelta(days=1), (last - first).days + 3, 1, tz):
        if interval.inside_one_utc_day or (interval.last_utc_day - interval.first_utc_day).days > 1:
            return None
    lo = day_start(first, tz).date() - timedelta(days=1)
    hi = (day_start(last + timedelta(days=1), tz) - timedelta(microseconds=1)).date() + timedelta(days=1)
    splits = []
    for offset in range((hi - lo).days + 1):
        day = lo + timedelta(days=offset)
        midnight = datetime.combine(day, time(0), tzinfo=UTC)
        local = midnight.astimezone(zone).date()
        boundary = day_start(local + timedelta(days=1), tz)
        if boundary < midnight + timedelta(days=1):
            splits.append(UtcDaySplit(day, boundary, local, local + timedelta(days=1), False))
        else:
            splits.append(UtcDaySplit(day, midnight, local, local, True))
    return splits


SPLITS_SQL = """SELECT * FROM unnest(%(days)s::date[], %(ts)s::timestamptz[], %(befores)s::date[],
                                    %(afters)s::date[]) AS b(day, t, before_d, after_d)"""


def _split_params(splits: list[UtcDaySplit]) -> dict[str, Any]:
    return {"days": [s.day for s in splits], "ts": [s.t for s in splits], "befores": [s.before for s in splits],
            "afters": [s.after for s in splits], "lo": splits[0].day, "hi": splits[-1].day}


def _dau_from_utc_days(connection: sa.Connection, first: date, last: date,
                       splits: list[UtcDaySplit]) -> list[dict]:
    """DAU from the per (UTC day, user) first/last event times, in any timezone the splits describe.

    A user's local dates during one UTC day are the local dates of their first and last event that day;
    the second differs from the first only when the day's events straddle its split, so only those rows
    add a second (date, user) pair. Pairs are then deduplicated once (a user seen on both sides of a UTC
    midnight on the same local date).
    """
    params = {**_split_params(splits), "first": first, "last": last}
    rows = connection.exec_driver_sql(
        f"""
        WITH b AS ({SPLITS_SQL}),
        pairs AS (
            SELECT CASE WHEN u.first_at < b.t THEN b.before_d ELSE b.after_d END AS d, u.user_id
            FROM rollup_user_day u JOIN b ON b.day = u.day WHERE u.day BETWEEN %(lo)s AND %(hi)s
            UNION
            SELECT b.after_d, u.user_id
            FROM rollup_user_day u JOIN b ON b.day = u.day
            WHERE u.day BETWEEN %(lo)s AND %(hi)s AND u.first_at < b.t AND u.last_at >= b.t
        )
        SELECT d, count(*) FROM pairs WHERE d BETWEEN %(first)s AND %(last)s GROUP BY d
        """, params)
    counts = dict(rows.all())
    return [{"date": first + timedelta(days=i), "dau": counts.get(first + timedelta(days=i), 0)}
            for i in range((last - first).days + 1)]


# --- top events -----------------------------------------------------------------------------------

TOP_ORDER = "ORDER BY 2 DESC, event_type COLLATE \"C\" LIMIT %(limit)s"


def top_events(connection: sa.Connection, scope: Scope, *, from_: date, to: date, limit: int = 10) -> list[dict]:
    """Return ``[{"event_type", "count"}]``: matching events per type with a local date in [from_, to],
    by count descending then event_type by code point, at most ``limit`` rows."""
    params: dict[str, Any] = {"first": from_, "last": to, "limit": limit}
    start, end = day_start(from_, scope.tz), day_start(to + timedelta(days=1), scope.tz)
    if scope.project_rollups:
        sql = f"""SELECT event_type, sum(events) FROM rollup_local_day_type
                  WHERE day BETWEEN %(first)s AND %(last)s GROUP BY 1 {TOP_ORDER}"""
    elif not scope.segments and _quarter_aligned(start, end):
        params.update(start=start, end=end)
        sql = f"""SELECT event_type, sum(events) FROM rollup_type_quarter
                  WHERE bucket >= %(start)s AND bucket < %(end)s GROUP BY 1 {TOP_ORDER}"""
    else:
        sql = f"SELECT event_type, count(*) FROM events WHERE {_events_in(from_, to, scope, params)} GROUP BY 1 {TOP_ORDER}"
    return [{"event_type": name, "count": int(count)} for name, count in connection.exec_driver_sql(sql, params)]


# --- retention ------------------------------------------------------------------------------------


def retention(connection: sa.Connection, scope: Scope, *, start_date: date, windows: int = 3,
              window_size: str = "daily", cohort: str = "first_seen", cohorts: int = 1) -> list[dict]:
    """Return one row per cohort: ``{"cohort_start_date", "size", "w0", ...}``.

    Cohort c starts at ``start_date + c·step`` (step 1 or 7 days); its window k covers the local days
    [start + (c+k)·step, +step). Members: users whose first-ever matching event (``first_seen``) or any
    matching event (``active``) falls in window 0; ``wk`` is the share of members with a matching event in
    window k, rounded to 4 places.
    """
    step = 7 if window_size == "weekly" else 1
    spans = cohorts + windows - 1  # global windows g; cohort c's window k is g = c + k
    intervals = local_days(start_date, spans, step, scope.tz)
    params: dict[str, Any] = {
        "tz": scope.tz, "start_date": start_date, "step": step, "cohorts": cohorts, "windows": windows,
        "a0": intervals[0].start, "a_cohorts": intervals[cohorts - 1].end, "a_end": intervals[-1].end,
        "d_cohorts": start_date + timedelta(days=cohorts * step), "d_end": start_date + timedelta(days=spans * step),
    }
    window_of = "((({t} AT TIME ZONE %(tz)s)::date - %(start_date)s) / %(step)s)"
    if scope.project_rollups:
        if cohort == "first_seen":
            members = f"""SELECT user_id, {window_of.format(t='first_at')} AS c FROM rollup_user_first
                          WHERE first_at >= %(a0)s AND first_at < %(a_cohorts)s"""
        else:
            members = """SELECT DISTINCT user_id, (day - %(start_date)s) / %(step)s AS c FROM rollup_local_day_user
                         WHERE day >= %(start_date)s AND day < %(d_cohorts)s"""
        if step == 1:  # one (local day, user) row per member and window: count rows
            sql = f"""
                WITH m AS MATERIALIZED ({members})
                SELECT m.c, l.day - %(start_date)s - m.c AS k, count(*)
                FROM m JOIN rollup_local_day_user l ON l.user_id = m.user_id
                    AND l.day >= %(start_date)s + m.c AND l.day < %(start_date)s + m.c + %(windows)s
                WHERE m.c >= 0 AND m.c < %(cohorts)s
                GROUP BY 1, 2
            """
        else:  # a week holds several rows per user: probe each (member, window) once instead of deduplicating
            sql = f"""
                WITH m AS MATERIALIZED ({members})
                SELECT m.c, w.k, count(*) FROM m CROSS JOIN generate_series(0, %(windows)s - 1) AS w(k)
                WHERE m.c >= 0 AND m.c < %(cohorts)s AND EXISTS (
                    SELECT 1 FROM rollup_local_day_user l WHERE l.user_id = m.user_id
                        AND l.day >= %(start_date)s + (m.c + w.k) * 7 AND l.day < %(start_date)s + (m.c + w.k + 1) * 7)
                GROUP BY 1, 2
            """
    elif not scope.segments and (splits := utc_day_splits(
            start_date, start_date + timedelta(days=spans * step - 1), scope.tz)) is not None:
        params.update(_split_params(splits))
        # (local date, user) pairs of the UTC-day rollup: see _dau_from_utc_days.
        pairs = f"""WITH b AS ({SPLITS_SQL}) SELECT d, user_id FROM (
                        SELECT CASE WHEN u.first_at < b.t THEN b.before_d ELSE b.after_d END AS d, u.user_id
                        FROM rollup_user_day u JOIN b ON b.day = u.day WHERE u.day BETWEEN %(lo)s AND %(hi)s {{only}}
                        UNION ALL
                        SELECT b.after_d, u.user_id FROM rollup_user_day u JOIN b ON b.day = u.day
                        WHERE u.day BETWEEN %(lo)s AND %(hi)s AND u.first_at < b.t AND u.last_at >= b.t {{only}}
                    ) AS p"""
        window_of_pair = "((d - %(start_date)s) / %(step)s)"
        if cohort == "first_seen":
            members = f"""SELECT user_id, {window_of.format(t='first_at')} AS c FROM rollup_user_first
                          WHERE first_at >= %(a0)s AND first_at < %(a_cohorts)s"""
        else:
            members = f"""SELECT DISTINCT user_id, {window_of_pair} AS c FROM ({pairs.format(only='')}) AS x
                          WHERE d >= %(start_date)s AND d < %(d_cohorts)s"""
        member_pairs = pairs.format(only="AND u.user_id IN (SELECT user_id FROM m)")
        sql = f"""
            WITH m AS MATERIALIZED ({members}),
            a AS (
                SELECT DISTINCT user_id, {window_of_pair} AS g FROM ({member_pairs}) AS x
                WHERE d >= %(start_date)s AND d < %(d_end)s
            )
            SELECT m.c, a.g - m.c AS k, count(*) FROM m JOIN a
                ON a.user_id = m.user_id AND a.g >= m.c AND a.g < m.c + %(windows)s
            WHERE m.c >= 0 AND m.c < %(cohorts)s
            GROUP BY 1, 2
        """
        connection.exec_driver_sql("SET LOCAL enable_nestloop = off")  # see the scan path below
    else:
        segment = _segment_sql(scope.segments, params)
        active = f"""SELECT DISTINCT user_id, {window_of.format(t='occurred_at')} AS g FROM events
                     WHERE occurred_at >= %(a0)s AND occurred_at < %(a_end)s AND {segment}
                       AND (occurred_at AT TIME ZONE %(tz)s)::date >= %(start_date)s
                       AND (occurred_at AT TIME ZONE %(tz)s)::date < %(d_end)s"""
        if cohort == "first_seen":
            # First-ever means over all stored matching events, also those before start_date.
            members = f"""SELECT user_id, {window_of.format(t='first_at')} AS c FROM (
                              SELECT user_id, min(occurred_at) AS first_at FROM events WHERE {segment} GROUP BY 1
                          ) AS firsts WHERE first_at >= %(a0)s AND first_at < %(a_cohorts)s"""
            # Only members' activity matters: deduplicate fewer (user, window) pairs.
            ctes = f"m AS MATERIALIZED ({members}), a AS ({active} AND user_id IN (SELECT user_id FROM m))"
        else:
            ctes = f"a AS MATERIALIZED ({active}), m AS (SELECT user_id, g AS c FROM a WHERE g < %(cohorts)s)"
        # Row estimates of aggregated CTEs are guesses; a nested loop over two of them is quadratic
        # (measured: 4.6 s instead of 0.3 s), and every input here is large enough for a hash join.
        connection.exec_driver_sql("SET LOCAL enable_nestloop = off")
        sql = f"""
            WITH {ctes}
            SELECT m.c, a.g - m.c AS k, count(*) FROM m JOIN a
                ON a.user_id = m.user_id AND a.g >= m.c AND a.g < m.c + %(windows)s
            WHERE m.c >= 0 AND m.c < %(cohorts)s
            GROUP BY 1, 2
        """
    counts = {(c, k): n for c, k, n in connection.exec_driver_sql(sql, params)}
    rows = []
    for c in range(cohorts):
        size = counts.get((c, 0), 0)  # every member is active in its window 0 by definition
        row: dict[str, Any] = {"cohort_start_date": start_date + timedelta(days=c * step), "size": size}
        for k in range(windows):
            row[f"w{k}"] = round(counts.get((c, k), 0) / size, 4) if size else 0.0
        rows.append(row)
    return rows


# --- summary --------------------------------------------------------------------------------------


def summary(connection: sa.Connection, scope: Scope, *, from_: date, to: date) -> dict:
    """Return ``{"first_date", "last_date", "events", "users"}``: the local dates of the earliest and
    latest stored events (all events, whatever the range or segments), and the matching events and
    distinct users with a local date in [from_, to]."""
    params: dict[str, Any] = {"tz": scope.tz, "first": from_, "last": to}
    earliest, latest = connection.exec_driver_sql(
        "SELECT (SELECT min(occurred_at) FROM events), (SELECT max(occurred_at) FROM events)").one()
    zone = ZoneInfo(scope.tz)
    first_date = earliest.astimezone(zone).date() if earliest else None
    last_date = latest.astimezone(zone).date() if latest else None
    whole = Interval(day_start(from_, scope.tz), day_start(to + timedelta(days=1), scope.tz))
    if earliest is None:
        return {"first_date": None, "last_date": None, "events": 0, "users": 0}
    if not scope.segments and whole.start <= earliest and latest < whole.end:
        # The range holds every stored event (the dashboard's default): totals need no range scan.
        events, users = connection.exec_driver_sql(
            "SELECT (SELECT coalesce(sum(events), 0) FROM rollup_type_quarter),"
            " (SELECT count(*) FROM rollup_user_first)").one()
        return {"first_date": first_date, "last_date": last_date, "events": int(events), "users": int(users)}
    if scope.project_rollups:
        sql = """SELECT (SELECT coalesce(sum(events), 0) FROM rollup_local_day_type
                         WHERE day BETWEEN %(first)s AND %(last)s),
                        (SELECT count(DISTINCT user_id) FROM rollup_local_day_user
                         WHERE day BETWEEN %(first)s AND %(last)s)"""
    elif not scope.segments and _quarter_aligned(whole.start, whole.end) and not whole.inside_one_utc_day:
        params.update(start=whole.start, end=whole.end, lo=whole.first_utc_day, hi=whole.last_utc_day)
        sql = """SELECT (SELECT coalesce(sum(events), 0) FROM rollup_type_quarter
                         WHERE bucket >= %(start)s AND bucket < %(end)s),
                        (SELECT count(DISTINCT user_id) FROM rollup_user_day
                         WHERE day BETWEEN %(lo)s AND %(hi)s AND first_at < %(end)s AND last_at >= %(start)s)"""
    else:
        sql = f"SELECT count(*), count(DISTINCT user_id) FROM events WHERE {_events_in(from_, to, scope, params)}"
    events, users = connection.exec_driver_sql(sql, params).one()
    return {"first_date": first_date, "last_date": last_date, "events": int(events), "users": int(users)}
