"""Read side of the analytics: one function per question, each taking a connection first.

Each question has three variants, ``<question>_from_project_rollup``, ``_from_utc_day_rollup`` and
``_from_scan``; ``router.route`` picks one per request (see router.py), and the question's public
function shapes the variant's counts into the answer. Every local date comes from PostgreSQL's
``AT TIME ZONE`` (see calendar.py): the variants agree by construction, never by two tz databases agreeing.
"""
from __future__ import annotations

import time as time_module
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, TypeVar

import psycopg2.errors
import sqlalchemy as sa

from ..database import primary_wal_lsn, wait_for_replay
from ..errors import ApiError
from . import router
from .calendar import Calendar, timezone_problem
from .rollups import STATE_SQL, FoldFailed, background_folder, project_timezone, rollup_timezone
from .router import Question, Scope
from .schemas import Segment, conditions_sql

__all__ = ["Scope", "run_read", "daily_active_users", "top_events", "retention", "summary", "QUESTIONS"]

QUERY_RETRY_AFTER_SECONDS = 5
# A misconfigured EVENTSAPP_TIMEZONE is an operator's error that a retry will not fix soon.
CONFIG_RETRY_AFTER_SECONDS = 30
WORK_MEM = "64MB"
T = TypeVar("T")


def run_read(engine: sa.Engine, question: Any, *, project_tz: str, timeout_ms: int,
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
    if problem := timezone_problem(engine, project_tz):
        raise ApiError(f"EVENTSAPP_TIMEZONE is not usable: {problem} Fix the setting and restart.",
                       status_code=503, headers={"Retry-After": str(CONFIG_RETRY_AFTER_SECONDS)})
    if tz is not None and (problem := timezone_problem(engine, tz)):
        raise ApiError("Invalid query parameter(s): tz.", status_code=400, errors={"query": {"tz": [problem]}})
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


# --- SQL pieces -----------------------------------------------------------------------------------

# An instant range only narrows an index scan; the local date test next to it is the definition. Day
# starts from ``D::timestamp AT TIME ZONE tz`` can be off by a DST shift at an ambiguous or skipped
# midnight, so the range is padded by more than any shift since 1900 (at most two hours).
PAD = "interval '3 hours'"


def _instants_of(column: str, first: str, end: str) -> str:
    """``column`` within the local dates [:first, :end) padded by PAD, for an index to narrow on."""
    return (f"{column} >= (CAST(:{first} AS date)::timestamp AT TIME ZONE :tz) - {PAD}"
            f" AND {column} < (CAST(:{end} AS date)::timestamp AT TIME ZONE :tz) + {PAD}")


def _local_date(column: str) -> str:
    return f"({column} AT TIME ZONE :tz)::date"


def _events_in(scope: Scope, params: dict[str, Any], first: date, last: date) -> str:
    """WHERE clause: events whose local date in ``scope.tz`` is in [first, last], matching the segments."""
    params.update(tz=scope.tz, first=first, last=last, after_last=last + timedelta(days=1))
    return (_instants_of("occurred_at", "first", "after_last")
            + f" AND {_local_date('occurred_at')} BETWEEN :first AND :last AND "
            + conditions_sql(scope.segments, params))


def _split_params(scope: Scope) -> dict[str, Any]:
    """The calendar's UTC-day splits as arrays for SPLITS_SQL (one per day, consecutive from ``lo``)."""
    assert scope.calendar is not None
    splits = scope.calendar.splits
    lo, hi = scope.calendar.utc_days
    return {"days": [s.day for s in splits], "ts": [s.t for s in splits], "befores": [s.before for s in splits],
            "afters": [s.after for s in splits], "lo": lo, "hi": hi}


SPLITS_SQL = """SELECT * FROM unnest(CAST(:days AS date[]), CAST(:ts AS timestamptz[]), CAST(:befores AS date[]),
                                    CAST(:afters AS date[])) AS b(day, t, before_d, after_d)"""

# --- DAU ------------------------------------------------------------------------------------------


def _range_span(*, from_: date, to: date, **_: Any) -> tuple[date, date]:
    return from_, to


def dau_from_project_rollup(connection: sa.Connection, scope: Scope, *, from_: date, to: date) -> dict[date, int]:
    rows = connection.execute(sa.text("SELECT day, users FROM rollup_dau WHERE day BETWEEN :first AND :last"),
                              {"first": from_, "last": to})
    return dict(rows.all())


# Per UTC day of the calendar: rows (users) with an event before its split, and with one at or after it.
# The split instant is looked up by position in the :ts array (the calendar's days are consecutive from :lo).
_SIDES_SQL = """
SELECT day, count(*) FILTER (WHERE first_at < (CAST(:ts AS timestamptz[]))[day - CAST(:lo AS date) + 1]),
            count(*) FILTER (WHERE last_at >= (CAST(:ts AS timestamptz[]))[day - CAST(:lo AS date) + 1])
FROM rollup_user_day WHERE day BETWEEN :lo AND :hi GROUP BY day
"""
# Per UTC day u in :pair_days: users on u's after side and on u + 1's before side (the same local date).
_BOTH_SIDES_SQL = """
SELECT u1.day, count(*) FROM rollup_user_day u1
JOIN rollup_user_day u2 ON u2.day = u1.day + 1 AND u2.user_id = u1.user_id
WHERE u1.day = ANY(CAST(:pair_days AS date[])) AND u2.day BETWEEN :lo AND :hi
  AND u1.last_at >= (CAST(:ts AS timestamptz[]))[u1.day - CAST(:lo AS date) + 1]
  AND u2.first_at < (CAST(:ts AS timestamptz[]))[u2.day - CAST(:lo AS date) + 1]
GROUP BY u1.day
"""


def dau_from_utc_day_rollup(connection: sa.Connection, scope: Scope, *, from_: date, to: date) -> dict[date, int]:
    """DAU from the per (UTC day, user) first/last event times, without deduplicating (date, user) pairs.

    A row of UTC day u puts its user on u's ``before`` date when its first event is before the split, and on
    u's ``after`` date when its last event is at or after it. A local date gets a user from at most two
    rows (the after side of u and the before side of u + 1; see ``Calendar.two_days_per_date``), so
    DAU = rows on its sides − users on both: counts per UTC day plus one join of neighbouring days, instead
    of hashing every (date, user) pair (measured at 1M events / 100k users: 2.3 s before).
    """
    assert scope.calendar is not None
    splits = {split.day: split for split in scope.calendar.splits}
    params = _split_params(scope)
    params["pair_days"] = [day for day, split in splits.items() if day + timedelta(days=1) in splits
                           and splits[day + timedelta(days=1)].before == split.after
                           and splits[day + timedelta(days=1)].before != splits[day + timedelta(days=1)].after]
    counts: Counter[date] = Counter()
    for day, on_before, on_after in connection.execute(sa.text(_SIDES_SQL), params):
        counts[splits[day].before] += on_before
        counts[splits[day].after] += on_after
    # Hash joins: the planner cannot estimate the array lookups, and 600k index probes took 4.8 s.
    connection.exec_driver_sql("SET LOCAL enable_nestloop = off")
    for day, both in connection.execute(sa.text(_BOTH_SIDES_SQL), params):
        counts[splits[day].after] -= both
    return {day: n for day, n in counts.items() if from_ <= day <= to and n}


def dau_from_scan(connection: sa.Connection, scope: Scope, *, from_: date, to: date) -> dict[date, int]:
    params: dict[str, Any] = {}
    where = _events_in(scope, params, from_, to)
    sql = f"""SELECT day, count(*) FROM (
                  SELECT DISTINCT {_local_date('occurred_at')} AS day, user_id FROM events WHERE {where}
              ) AS pairs GROUP BY day"""
    return dict(connection.execute(sa.text(sql), params).all())


DAU = Question("dau", dau_from_project_rollup, dau_from_utc_day_rollup, dau_from_scan, _range_span,
               lambda calendar: calendar.exact and calendar.two_days_per_date)


def daily_active_users(connection: sa.Connection, scope: Scope, *, from_: date, to: date,
                       kind: str | None = None) -> list[dict]:
    """Return ``[{"date", "dau"}]`` for every local date in [from_, to], zero-filled: distinct users with at
    least one matching event that day."""
    counts = router.answer(connection, DAU, scope, {"from_": from_, "to": to}, kind)
    return [{"date": from_ + timedelta(days=i), "dau": counts.get(from_ + timedelta(days=i), 0)}
            for i in range((to - from_).days + 1)]


# --- top events -----------------------------------------------------------------------------------

TOP_ORDER = "ORDER BY 2 DESC, event_type COLLATE \"C\" LIMIT :limit"


def top_events_from_project_rollup(connection: sa.Connection, scope: Scope, *, from_: date, to: date,
                                   limit: int) -> list[tuple[str, int]]:
    sql = f"""SELECT event_type, sum(events) FROM rollup_local_day_type
              WHERE day BETWEEN :first AND :last GROUP BY 1 {TOP_ORDER}"""
    return connection.execute(sa.text(sql), {"first": from_, "last": to, "limit": limit}).all()


def top_events_from_utc_day_rollup(connection: sa.Connection, scope: Scope, *, from_: date, to: date,
                                   limit: int) -> list[tuple[str, int]]:
    """From the 15-minute buckets: every local midnight is at a quarter hour (calendar.clean)."""
    assert scope.calendar is not None
    sql = f"""SELECT event_type, sum(events) FROM rollup_type_quarter
              WHERE bucket >= :start AND bucket < :end GROUP BY 1 {TOP_ORDER}"""
    params = {"start": scope.calendar.start, "end": scope.calendar.end, "limit": limit}
    return connection.execute(sa.text(sql), params).all()


def top_events_from_scan(connection: sa.Connection, scope: Scope, *, from_: date, to: date,
                         limit: int) -> list[tuple[str, int]]:
    params: dict[str, Any] = {"limit": limit}
    sql = f"SELECT event_type, count(*) FROM events WHERE {_events_in(scope, params, from_, to)} GROUP BY 1 {TOP_ORDER}"
    return connection.execute(sa.text(sql), params).all()


TOP_EVENTS = Question("top_events", top_events_from_project_rollup, top_events_from_utc_day_rollup,
                      top_events_from_scan, _range_span, lambda calendar: calendar.exact and calendar.clean)


def top_events(connection: sa.Connection, scope: Scope, *, from_: date, to: date, limit: int = 10,
               kind: str | None = None) -> list[dict]:
    """Return ``[{"event_type", "count"}]``: matching events per type with a local date in [from_, to],
    by count descending then event_type by code point, at most ``limit`` rows."""
    rows = router.answer(connection, TOP_EVENTS, scope, {"from_": from_, "to": to, "limit": limit}, kind)
    return [{"event_type": name, "count": int(count)} for name, count in rows]


# --- retention ------------------------------------------------------------------------------------

# Cohort c's window k is global window g = c + k; g of a local date d is (d - start_date) / step.
_WINDOW_OF_PAIR = "((d - CAST(:start_date AS date)) / :step)"
_WINDOW_OF_DAY = "((day - CAST(:start_date AS date)) / :step)"
_FINAL = """SELECT m.c, a.g - m.c AS k, count(*) FROM m JOIN a
                ON a.user_id = m.user_id AND a.g >= m.c AND a.g < m.c + :windows
            WHERE m.c >= 0 AND m.c < :cohorts
            GROUP BY 1, 2"""


def _first_seen_members(table_first_at: str) -> str:
    """Members by first-ever event time ``first_at`` of ``table_first_at`` (a table or subquery with
    user_id, first_at): users whose first local date falls in the cohorts' windows 0."""
    local = _local_date("first_at")
    return (f"SELECT user_id, ({local} - CAST(:start_date AS date)) / :step AS c FROM {table_first_at}"
            f" WHERE {_instants_of('first_at', 'start_date', 'd_cohorts')}"
            f" AND {local} >= :start_date AND {local} < :d_cohorts")


# Cohort c is first_day = start_date + c; its window k is day = first_day + k.
_COHORT_DAYS = sa.text("""
SELECT first_day - CAST(:start_date AS date), day - first_day, users FROM rollup_cohort_day
WHERE first_day >= :start_date AND first_day < :d_cohorts AND day >= first_day AND day - first_day < :windows
""")


def retention_from_project_rollup(connection: sa.Connection, scope: Scope, *, start_date: date, windows: int,
                                  window_size: str, cohort: str, cohorts: int) -> dict[tuple[int, int], int]:
    params = _retention_params(scope, start_date, windows, window_size, cohorts)
    if cohort == "first_seen" and params["step"] == 1:
        # Daily windows of first-seen cohorts are cells of the cohort rollup: no member is read.
        return {(c, k): n for c, k, n in connection.execute(_COHORT_DAYS, params)}
    distinct = "DISTINCT" if params["step"] > 1 else ""  # a week holds several rows per user
    if cohort == "first_seen":
        # One index scan for all members (the btree sorts the `= ANY(array)` keys, and PostgreSQL 17+ reads
        # neighbouring members off one leaf page) instead of one probe per member, or per member and week.
        ctes = f"""m AS MATERIALIZED ({_first_seen_members("rollup_user_first")}),
            a AS MATERIALIZED (
                SELECT {distinct} user_id, {_WINDOW_OF_DAY} AS g FROM rollup_local_day_user
                WHERE user_id = ANY(ARRAY(SELECT user_id FROM m)) AND day >= :start_date AND day < :d_end)"""
    else:
        # Members are the active users of the cohorts' windows 0: one pass over the span's days gives both.
        ctes = f"""a AS MATERIALIZED (
                SELECT {distinct} user_id, {_WINDOW_OF_DAY} AS g FROM rollup_local_day_user
                WHERE day >= :start_date AND day < :d_end),
            m AS (SELECT user_id, g AS c FROM a WHERE g < :cohorts)"""
    sql = f"WITH {ctes} {_FINAL}"
    # Row estimates of materialized CTEs are guesses: keep the final join a hash join (see retention_from_scan)
    # and deduplicate weeks by hashing, not by sorting text (see retention_from_utc_day_rollup).
    connection.exec_driver_sql("SET LOCAL enable_nestloop = off; SET LOCAL enable_sort = off")
    return {(c, k): n for c, k, n in connection.execute(sa.text(sql), params)}


# The local dates a user was active on during one UTC day are exactly the local dates of their first and
# last event that day (the calendar checked the local date never goes back within it and takes at most two
# values): the first event's date, plus the later date when the day's events straddle its split ``t``. One
# pass over rollup_user_day gives each row both (the second NULL unless the events straddle the split; NULL
# fails every date test).
_MEMBERS_ONLY = " AND u.user_id IN (SELECT user_id FROM m)"
_RETENTION_PAIRS = """SELECT u.user_id, x.d FROM rollup_user_day u JOIN b ON b.day = u.day
    CROSS JOIN LATERAL (VALUES (CASE WHEN u.first_at < b.t THEN b.before_d ELSE b.after_d END),
                               (CASE WHEN u.first_at < b.t AND u.last_at >= b.t THEN b.after_d END)) AS x(d)
    WHERE u.day BETWEEN :lo AND :hi"""
# Each user's windows g with an active local date in the span; {only} narrows the pairs (to cohort members).
_RETENTION_ACTIVE = ("SELECT DISTINCT user_id, {window} AS g FROM ({pairs}{only}) AS x"
                     " WHERE d >= :start_date AND d < :d_end")
_ACTIVE_MEMBERS = _RETENTION_ACTIVE.format(window=_WINDOW_OF_PAIR, pairs=_RETENTION_PAIRS, only=_MEMBERS_ONLY)
_ACTIVE_ALL = _RETENTION_ACTIVE.format(window=_WINDOW_OF_PAIR, pairs=_RETENTION_PAIRS, only="")


def retention_from_utc_day_rollup(connection: sa.Connection, scope: Scope, *, start_date: date, windows: int,
                                  window_size: str, cohort: str, cohorts: int) -> dict[tuple[int, int], int]:
    params = {**_retention_params(scope, start_date, windows, window_size, cohorts), **_split_params(scope)}
    if cohort == "first_seen":
        ctes = f"m AS MATERIALIZED ({_first_seen_members('rollup_user_first')}), a AS ({_ACTIVE_MEMBERS})"
    else:  # members are the active users of the cohorts' windows 0: one pass gives both
        ctes = f"a AS MATERIALIZED ({_ACTIVE_ALL}), m AS (SELECT user_id, g AS c FROM a WHERE g < :cohorts)"
    sql = f"WITH b AS ({SPLITS_SQL}), {ctes} {_FINAL}"
    # See retention_from_scan; and the pairs' row estimates are small guesses that make the planner sort
    # ~200k (user, window) pairs by text (a collation-aware comparison each) to deduplicate them: hash them.
    connection.exec_driver_sql("SET LOCAL enable_nestloop = off; SET LOCAL enable_sort = off")
    return {(c, k): n for c, k, n in connection.execute(sa.text(sql), params)}


def retention_from_scan(connection: sa.Connection, scope: Scope, *, start_date: date, windows: int,
                        window_size: str, cohort: str, cohorts: int) -> dict[tuple[int, int], int]:
    params = _retention_params(scope, start_date, windows, window_size, cohorts)
    segment = conditions_sql(scope.segments, params)
    local = _local_date("occurred_at")
    active = f"""SELECT DISTINCT user_id, ({local} - CAST(:start_date AS date)) / :step AS g FROM events
                 WHERE {_instants_of('occurred_at', 'start_date', 'd_end')} AND {segment}
                   AND {local} >= :start_date AND {local} < :d_end"""
    if cohort == "first_seen":
        # First-ever means over all stored matching events, also those before start_date.
        firsts = f"(SELECT user_id, min(occurred_at) AS first_at FROM events WHERE {segment} GROUP BY 1) AS firsts"
        # Only members' activity matters: deduplicate fewer (user, window) pairs.
        ctes = (f"m AS MATERIALIZED ({_first_seen_members(firsts)}),"
                f" a AS ({active} AND user_id IN (SELECT user_id FROM m))")
    else:
        ctes = f"a AS MATERIALIZED ({active}), m AS (SELECT user_id, g AS c FROM a WHERE g < :cohorts)"
    # Row estimates of aggregated CTEs are guesses; a nested loop over two of them is quadratic
    # (measured: 4.6 s instead of 0.3 s), and every input here is large enough for a hash join.
    connection.exec_driver_sql("SET LOCAL enable_nestloop = off")
    sql = f"WITH {ctes} {_FINAL}"
    return {(c, k): n for c, k, n in connection.execute(sa.text(sql), params)}


def _step(window_size: str) -> int:
    return 7 if window_size == "weekly" else 1


def _retention_params(scope: Scope, start_date: date, windows: int, window_size: str, cohorts: int) -> dict[str, Any]:
    step = _step(window_size)
    spans = cohorts + windows - 1  # global windows g; cohort c's window k is g = c + k
    return {"tz": scope.tz, "start_date": start_date, "step": step, "cohorts": cohorts, "windows": windows,
            "d_cohorts": start_date + timedelta(days=cohorts * step),
            "d_end": start_date + timedelta(days=spans * step)}


def _retention_span(*, start_date: date, windows: int, window_size: str, cohorts: int, **_: Any) -> tuple[date, date]:
    return start_date, start_date + timedelta(days=(cohorts + windows - 1) * _step(window_size) - 1)


RETENTION = Question("retention", retention_from_project_rollup, retention_from_utc_day_rollup,
                     retention_from_scan, _retention_span)


def retention(connection: sa.Connection, scope: Scope, *, start_date: date, windows: int = 3,
              window_size: str = "daily", cohort: str = "first_seen", cohorts: int = 1,
              kind: str | None = None, start: Any = None, return_: Any = None, mode: str = "on") -> list[dict]:
    """Return one row per cohort: ``{"cohort_start_date", "size", "w0", ...}``.

    Cohort c starts at ``start_date + c·step`` (step 1 or 7 days); its window k covers the local days
    [start + (c+k)·step, +step). Members: users whose first-ever matching event (``first_seen``) or any
    matching event (``active``) falls in window 0; ``wk`` is the share of members with a matching event in
    window k, rounded to 4 places, or None while window k has not ended (its last local day is today or
    later in ``scope.tz``, today as PostgreSQL sees it).
    """
    arguments = {"start_date": start_date, "windows": windows, "window_size": window_size, "cohort": cohort,
                 "cohorts": cohorts}
    sizes = None
    if start is not None or return_ is not None or mode != "on":
        # Issue 14: distinct start/return events or on_or_after; see retention_events.py.
        from .retention_events import RETENTION_EVENTS

        arguments.update(start=start, return_=return_, mode=mode)
        sizes, counts = router.answer(connection, RETENTION_EVENTS, scope, arguments, kind)
    else:
        counts = router.answer(connection, RETENTION, scope, arguments, kind)
    today = connection.execute(sa.text("SELECT (now() AT TIME ZONE :tz)::date"), {"tz": scope.tz}).scalar_one()
    step = _step(window_size)
    rows = []
    for c in range(cohorts):
        # Every member is active in its window 0 by definition, unless start and return events differ.
        size = counts.get((c, 0), 0) if sizes is None else sizes.get(c, 0)
        row: dict[str, Any] = {"cohort_start_date": start_date + timedelta(days=c * step), "size": size}
        for k in range(windows):
            ended = start_date + timedelta(days=(c + k + 1) * step) <= today
            row[f"w{k}"] = (round(counts.get((c, k), 0) / size, 4) if size else 0.0) if ended else None
        rows.append(row)
    return rows


# --- summary --------------------------------------------------------------------------------------

RANGE_TOTALS_SQL = """SELECT (SELECT coalesce(sum(events), 0) FROM rollup_type_quarter),
                             (SELECT count(*) FROM rollup_user_first)"""


def summary_from_project_rollup(connection: sa.Connection, scope: Scope, *, from_: date, to: date) -> tuple[int, int]:
    sql = """SELECT (SELECT coalesce(sum(events), 0) FROM rollup_local_day_type WHERE day BETWEEN :first AND :last),
                    (SELECT count(DISTINCT user_id) FROM rollup_local_day_user WHERE day BETWEEN :first AND :last)"""
    return connection.execute(sa.text(sql), {"first": from_, "last": to}).one()


def summary_from_utc_day_rollup(connection: sa.Connection, scope: Scope, *, from_: date, to: date) -> tuple[int, int]:
    """From the 15-minute buckets (events) and the per-UTC-day rollup (users active in [start, end))."""
    assert scope.calendar is not None
    start, end = scope.calendar.start, scope.calendar.end
    earliest, latest = connection.exec_driver_sql("SELECT min(occurred_at), max(occurred_at) FROM events").one()
    if earliest is not None and start <= earliest and latest < end:
        # The range holds every stored event (the dashboard's default): totals need no range scan.
        return connection.exec_driver_sql(RANGE_TOTALS_SQL).one()
    sql = """SELECT (SELECT coalesce(sum(events), 0) FROM rollup_type_quarter WHERE bucket >= :start AND bucket < :end),
                    (SELECT count(DISTINCT user_id) FROM rollup_user_day
                     WHERE day BETWEEN :lo AND :hi AND first_at < :end AND last_at >= :start)"""
    params = {"start": start, "end": end, "lo": _utc_date(start), "hi": _utc_date(end - timedelta(microseconds=1))}
    return connection.execute(sa.text(sql), params).one()


def summary_from_scan(connection: sa.Connection, scope: Scope, *, from_: date, to: date) -> tuple[int, int]:
    params: dict[str, Any] = {}
    sql = f"SELECT count(*), count(DISTINCT user_id) FROM events WHERE {_events_in(scope, params, from_, to)}"
    return connection.execute(sa.text(sql), params).one()


def _utc_date(instant: datetime) -> date:
    return instant.astimezone(timezone.utc).date()


def _summary_fits_utc_day_rollup(calendar: Calendar) -> bool:
    """Buckets need quarter-hour midnights; first/last times per UTC day cannot tell whether a user was
    active in a slice strictly inside one UTC day."""
    if not (calendar.exact and calendar.clean):
        return False
    start, end = calendar.start, calendar.end
    tick = timedelta(microseconds=1)
    at_utc_midnight = _utc_date(start) != _utc_date(start - tick) or _utc_date(end) != _utc_date(end - tick)
    return _utc_date(start) != _utc_date(end - tick) or at_utc_midnight


SUMMARY = Question("summary", summary_from_project_rollup, summary_from_utc_day_rollup, summary_from_scan,
                   _range_span, _summary_fits_utc_day_rollup)


def summary(connection: sa.Connection, scope: Scope, *, from_: date, to: date, kind: str | None = None) -> dict:
    """Return ``{"data_first_date", "data_last_date", "events", "users"}``: the local dates of the earliest
    and latest stored events (all events, whatever the range or segments), and the matching events and
    distinct users with a local date in [from_, to]."""
    first_date, last_date = connection.execute(sa.text(
        "SELECT (min(occurred_at) AT TIME ZONE :tz)::date, (max(occurred_at) AT TIME ZONE :tz)::date FROM events"),
        {"tz": scope.tz}).one()
    if first_date is None:
        events, users = 0, 0
    else:
        events, users = router.answer(connection, SUMMARY, scope, {"from_": from_, "to": to}, kind)
    return {"data_first_date": first_date, "data_last_date": last_date, "events": int(events), "users": int(users)}


QUESTIONS = {question.name: question for question in (DAU, TOP_EVENTS, RETENTION, SUMMARY)}


# Funnels (issue 14): a question with a scan variant only; defined in funnels.py.
from .funnels import FUNNEL  # noqa: E402  (funnels.py imports router, not this module)

QUESTIONS[FUNNEL.name] = FUNNEL
