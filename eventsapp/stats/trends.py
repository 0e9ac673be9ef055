"""Trends, stickiness and lifecycle: one function per question, each taking a connection first.

Every local date, bucket start and day boundary is computed by PostgreSQL with ``AT TIME ZONE`` (the one
source of timezone truth); Python only zero-fills, pairs buckets and orders series.

Where rows come from (``_source_sql``): the project timezone's rollups when they hold the answer exactly
(no segment; ``events`` per day/week/month, also split by ``event_type``, from ``rollup_local_day_type``;
``users``/``wau``/``mau`` without a breakdown, and stickiness, from ``rollup_local_day_user``); otherwise a
scan of ``events`` over the instants of the range, narrowed by the ``occurred_at`` index.

Hour buckets are the real hours as they happened: each starts at a local full hour and lasts 3,600 s. A
day whose clock goes back has 25 of them (the repeated local hour appears twice, told apart by its UTC
offset in the label, e.g. ``2025-10-26T03:00:00+03:00`` then ``2025-10-26T03:00:00+02:00``); a day whose
clock goes forward has 23 (the skipped local hour has no bucket). Zones whose offset changes by less than
an hour (Australia/Lord_Howe) are bucketed by the hours of their standard offset's start of day.
"""
from __future__ import annotations

import bisect
import operator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import MAX_PREC, Decimal, localcontext
from typing import Any

import sqlalchemy as sa

from ..errors import ApiError
from . import router
from .queries import DAU
from .router import Question, Scope
from .schemas import conditions_sql

MAX_BUCKETS = 2000
WINDOW_DAYS = {"wau": 7, "mau": 30}
PROPERTY_MEASURES = ("sum", "avg", "min", "max", "median", "p90", "p95", "p99")
MEASURES = ("events", "users", "wau", "mau", *PROPERTY_MEASURES, "per_user_avg")
INTERVALS = ("hour", "day", "week", "month")
# Measures whose empty bucket is 0; the others (averages, extremes, percentiles) have no value: null.
ZERO_WHEN_EMPTY = ("events", "users", "wau", "mau", "sum")

# The aggregate of each measure over the rows ``ev`` (n = events a row stands for; x = the number).
_AGGREGATES = {
    "events": "sum(n)",
    "users": "count(DISTINCT user_id)",
    "per_user_avg": "sum(n)::numeric / count(DISTINCT user_id)",
    "sum": "sum(x)",
    "avg": "avg(x)",
    "min": "min(x)",
    "max": "max(x)",
    # percentile_cont interpolates linearly between the two nearest values (it works on float8).
    "median": "percentile_cont(0.5) WITHIN GROUP (ORDER BY x::float8)",
    "p90": "percentile_cont(0.9) WITHIN GROUP (ORDER BY x::float8)",
    "p95": "percentile_cont(0.95) WITHIN GROUP (ORDER BY x::float8)",
    "p99": "percentile_cont(0.99) WITHIN GROUP (ORDER BY x::float8)",
}
# What ranks breakdown values: event count, distinct users, or the measure itself.
_RANKS = {"events": "sum(n)", "users": "count(DISTINCT user_id)", "wau": "count(DISTINCT user_id)",
          "mau": "count(DISTINCT user_id)", "per_user_avg": "count(DISTINCT user_id)",
          **{m: _AGGREGATES[m] for m in PROPERTY_MEASURES}}
# Measures whose value over the union of groups follows from each group's value (and which rank by
# themselves): a breakdown's ``other`` group and ranking need no second read of the rows.
_COMBINE = {"events": operator.add, "sum": operator.add, "min": min, "max": max}


@dataclass(frozen=True)
class Breakdown:
    """Split by ``event_type``, or by the text of property ``key`` (numbers and booleans as JSON text)."""

    kind: str  # "event_type" | "property"
    key: str | None = None


@dataclass(frozen=True)
class Bucket:
    key: Any  # a local date, or for hours the UTC instant the hour starts
    label: str
    day: date  # the local date it starts on


# --- helpers -----------------------------------------------------------------------------------------


# Instants only narrow the index scan; the local date test beside them is the definition. A midnight that
# DST skips or repeats can put ``D::timestamp AT TIME ZONE tz`` off by the shift: pad by more than any.
PAD = "interval '3 hours'"


def _instants(connection: sa.Connection, tz: str, first: date, end: date) -> tuple[datetime, datetime]:
    """Instants around local dates [first, end): before the first's start and after the end's start."""
    return tuple(connection.execute(sa.text(
        f"SELECT (CAST(:a AS timestamp) AT TIME ZONE :tz) - {PAD}, (CAST(:b AS timestamp) AT TIME ZONE :tz) + {PAD}"),
        {"a": first, "b": end, "tz": tz}).one())


def buckets(connection: sa.Connection, tz: str, interval: str, first: date, last: date) -> list[Bucket]:
    """The buckets of local dates [first, last]: calendar days, ISO weeks (from Monday) or months that
    touch the range (the first and last may be partial), or the real hours from ``first``'s local
    midnight to ``last``'s end (23 or 25 on DST days), labelled with their local time and UTC offset."""
    if interval == "hour":
        rows = connection.execute(sa.text("""
            SELECT g, to_char(g AT TIME ZONE :tz, 'YYYY-MM-DD"T"HH24:MI:SS')
                      || CASE WHEN o < interval '0' THEN '-' ELSE '+' END || to_char(CASE WHEN o < interval '0' THEN -o ELSE o END, 'HH24:MI'),
                   (g AT TIME ZONE :tz)::date
            FROM generate_series((CAST(:first AS timestamp) AT TIME ZONE :tz) - interval '3 hours',
                                 (CAST(:end AS timestamp) AT TIME ZONE :tz) + interval '3 hours',
                                 interval '1 hour') AS g,
                 LATERAL (SELECT (g AT TIME ZONE :tz) - (g AT TIME ZONE 'UTC') AS o) AS offsets
            WHERE CAST(g AT TIME ZONE :tz AS date) BETWEEN :first AND :last
            ORDER BY g"""), {"tz": tz, "first": first, "last": last, "end": last + timedelta(days=1)}).all()
        return [Bucket(key, label, day) for key, label, day in rows]
    rows = connection.execute(sa.text("""
        SELECT CAST(g AS date) FROM generate_series(date_trunc(:unit, CAST(:first AS timestamp)),
                                                    CAST(:last AS timestamp), CAST(:step AS interval)) AS g
        ORDER BY g"""), {"unit": interval, "first": first, "last": last, "step": f"1 {interval}"}).scalars()
    return [Bucket(day, day.isoformat(), day) for day in rows]


def _bucket_of_day(interval: str, column: str = "d") -> str:
    """SQL for the bucket (a local date) of local date ``column``."""
    if interval == "day":
        return column
    return f"CAST(date_trunc('{interval}', CAST({column} AS timestamp)) AS date)"


def _value_sql(breakdown: Breakdown | None, params: dict[str, Any]) -> str:
    """SQL for an event's breakdown value: NULL when missing, JSON null or empty (the ``none`` group)."""
    if breakdown is None:
        return "CAST(NULL AS text)"
    if breakdown.kind == "event_type":
        return "event_type"
    params["bkey"] = breakdown.key
    return "NULLIF(properties ->> :bkey, '')"


def _source_sql(rollups: bool, scope: Scope, measure: str, interval: str, breakdown: Breakdown | None,
                prop: str | None, params: dict[str, Any]) -> str:
    """Rows ``(d, hb, v, user_id, x, n)`` of the local dates [:lo, :last]: local date, hour bucket (hour
    interval only), breakdown value, user, the property's number, and how many events the row stands for."""
    if rollups and interval != "hour":
        if measure == "events" and (breakdown is None or breakdown.kind == "event_type"):
            value = "event_type" if breakdown else "CAST(NULL AS text)"
            return f"""SELECT day AS d, NULL AS hb, {value} AS v, CAST(NULL AS text) AS user_id,
                              CAST(NULL AS numeric) AS x, events AS n
                       FROM rollup_local_day_type WHERE day BETWEEN :lo AND :last"""
        if measure in ("users", "wau", "mau") and breakdown is None:
            return """SELECT day AS d, NULL AS hb, CAST(NULL AS text) AS v, user_id, CAST(NULL AS numeric) AS x,
                             1 AS n
                      FROM rollup_local_day_user WHERE day BETWEEN :lo AND :last"""
    local = "(occurred_at AT TIME ZONE :tz)"
    # The start of the event's local hour as an instant: the instant minus its minutes into that hour.
    hour = f"occurred_at - ({local} - date_trunc('hour', {local}))" if interval == "hour" else "NULL"
    number = "NULL"
    numeric_only = "TRUE"
    if prop is not None:
        params["pkey"] = prop
        # Numbers only: a string that looks like one ("12.5") is not a number and is left out.
        number = "CASE WHEN jsonb_typeof(properties -> :pkey) = 'number' THEN CAST(properties ->> :pkey AS numeric) END"
        numeric_only = "jsonb_typeof(properties -> :pkey) = 'number'"
    return f"""SELECT CAST({local} AS date) AS d, {hour} AS hb, {_value_sql(breakdown, params)} AS v, user_id,
                      {number} AS x, 1 AS n
               FROM events
               WHERE occurred_at >= :lo_at AND occurred_at < :hi_at AND CAST({local} AS date) BETWEEN :lo AND :last
                 AND {numeric_only} AND {conditions_sql(scope.segments, params)}"""


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    return value


def _refuse(name: str, message: str) -> ApiError:
    return ApiError(f"Invalid query parameter(s): {name}.", status_code=400, errors={"query": {name: [message]}})


# --- trends ------------------------------------------------------------------------------------------


def _trends(connection: sa.Connection, scope: Scope, rollups: bool, *, from_: date, to: date, measure: str,
            property: str | None, interval: str, breakdown: Breakdown | None, limit: int,
            compare: str | None) -> list[dict]:
    """Return one zero-filled series per breakdown group: ``[{"bucket", "breakdown", "group", "value"
    [, "previous_bucket", "previous_value"]}]``, series in rank order then ``other`` then ``none``.

    ``events`` counts events, ``users`` distinct users in the bucket, ``wau``/``mau`` distinct users in
    the 7/30 local days ending with the bucket's day (looking before ``from_``), property measures
    aggregate the numeric values of ``property``, ``per_user_avg`` is events per active user. Breakdown
    values are ranked over [from_, to] (desc, then by code point); the top ``limit`` are series, the rest
    one ``other`` series, a missing/null/empty value the ``none`` series. ``compare="previous"`` pairs the
    i-th bucket with the i-th bucket of the same number of days just before ``from_``.
    """
    days = (to - from_).days + 1
    current = buckets(connection, scope.tz, interval, from_, to)
    if len(current) > MAX_BUCKETS:
        raise _refuse("interval", f"The range has {len(current)} {interval} buckets; at most {MAX_BUCKETS} "
                                  "are allowed: choose a longer interval or a shorter range.")
    previous: list[Bucket] = []
    first_considered = from_
    if compare == "previous":
        first_considered = from_ - timedelta(days=days)
        previous = buckets(connection, scope.tz, interval, first_considered, from_ - timedelta(days=1))
    window = WINDOW_DAYS.get(measure, 1)
    lo = first_considered - timedelta(days=window - 1)
    params: dict[str, Any] = {"tz": scope.tz, "lo": lo, "first": from_, "last": to, "pfirst": first_considered,
                              "limit": limit}
    params["lo_at"], params["hi_at"] = _instants(connection, scope.tz, lo, to + timedelta(days=1))
    source = _source_sql(rollups, scope, measure, interval, breakdown, property, params)
    # ev: the rows with their range r (0 = [from, to], 1 = the previous range, 2 = look-back of windows).
    range_of = "CASE WHEN d >= :first THEN 0 WHEN d >= :pfirst THEN 1 ELSE 2 END"
    found, ranked = None, None
    if breakdown is not None and measure in _COMBINE:
        found = _combined_breakdown(connection, source, range_of, params, measure, interval, limit)
    elif breakdown is not None and (measure == "users" or measure in PROPERTY_MEASURES):
        found, ranked = _few_values(connection, source, range_of, params, measure, interval, limit)
    if found is not None:
        values, ranks = found
    else:
        if _RANKS[measure] == "count(DISTINCT user_id)":
            rank_sql = """SELECT v, count(*) AS m FROM (SELECT DISTINCT v, user_id FROM ev WHERE r = 0 AND v IS NOT NULL)
                          AS pairs GROUP BY v"""
        else:
            rank_sql = f"SELECT v, {_RANKS[measure]} AS m FROM ev WHERE r = 0 AND v IS NOT NULL GROUP BY v"
        # top: the ranked values; g labels each row value / other / none.
        if breakdown is None:  # one series: no ranking, and nothing to materialise or join
            ctes = f"""
                WITH top AS (SELECT CAST(NULL AS text) AS v, CAST(NULL AS bigint) AS rk WHERE FALSE),
                g AS (SELECT s.*, {range_of} AS r, 'value' AS grp, CAST(NULL AS text) AS vkey, CAST(NULL AS bigint) AS rk
                      FROM ({source}) AS s)"""
        else:
            # Two reads of the rows instead of one materialised copy (a million rows spill to disk): rank the
            # values first, then label each row by the ranked list. The local-date filter hides the row count
            # from the planner, which would then sort a million values by locale to group them: hash instead.
            connection.exec_driver_sql("SET LOCAL enable_sort = off")
            if ranked is None:
                ranked = connection.execute(sa.text(f"""
                    WITH ev AS (SELECT s.*, {range_of} AS r FROM ({source}) AS s)
                    SELECT v FROM ({rank_sql}) AS ranked ORDER BY m DESC NULLS LAST, v COLLATE "C" LIMIT :limit"""),
                    params).scalars().all()
            params["top"] = list(ranked)
            ctes = f"""
                WITH top AS (SELECT v, rk FROM unnest(CAST(:top AS text[])) WITH ORDINALITY AS t(v, rk)),
                g AS (
                    SELECT ev.*, CASE WHEN ev.v IS NULL THEN 'none' WHEN top.v IS NOT NULL THEN 'value' ELSE 'other' END
                               AS grp,
                           top.v AS vkey, top.rk
                    FROM (SELECT s.*, {range_of} AS r FROM ({source}) AS s) AS ev LEFT JOIN top ON top.v = ev.v
                )"""
        if measure == "users" and interval == "day" and breakdown is None and not scope.segments:
            values, ranks = _daily_users(connection, scope, params)
        elif measure in WINDOW_DAYS:
            unique_pairs = breakdown is None and rollups and interval != "hour"
            values, ranks = (_window_masks(connection, ctes, params, window, current + previous, unique_pairs)
                             or _window_values(connection, ctes, params, window, current + previous, unique_pairs))
        else:
            bucket = "hb" if interval == "hour" else _bucket_of_day(interval)
            if measure in ("users", "per_user_avg"):
                # Distinct users by hashing (bucket, group, user) rows, then counting them: no sort per bucket.
                aggregate = "count(*)" if measure == "users" else "sum(n)::numeric / count(*)"
                sql = f"""{ctes}
                    SELECT r, b, grp, vkey, min(rk), {aggregate} FROM (
                        SELECT r, {bucket} AS b, grp, vkey, rk, user_id, sum(n) AS n FROM g WHERE r < 2
                        GROUP BY r, b, grp, vkey, rk, user_id
                    ) AS per_user GROUP BY r, b, grp, vkey"""
            else:
                sql = f"""{ctes}
                    SELECT r, {bucket} AS b, grp, vkey, min(rk), {_AGGREGATES[measure]}
                    FROM g WHERE r < 2 GROUP BY r, b, grp, vkey"""
            values, ranks = {}, {}
            for r, b, grp, vkey, rk, value in connection.execute(sa.text(sql), params):
                values[(r, b, grp, vkey)] = _number(value)
                if rk is not None:
                    ranks[vkey] = rk
                ranks.setdefault((grp, vkey), None)
    series = _series_order(ranks, breakdown)
    empty = 0 if measure in ZERO_WHEN_EMPTY else None
    rows = []
    for grp, vkey in series:
        for i, b in enumerate(current):
            row: dict[str, Any] = {"bucket": b.label, "breakdown": vkey, "group": grp,
                                   "value": values.get((0, b.key, grp, vkey), empty)}
            if compare == "previous":
                p = previous[i] if i < len(previous) else None
                row["previous_bucket"] = p.label if p else None
                row["previous_value"] = values.get((1, p.key, grp, vkey), empty) if p else empty
            rows.append(row)
    return rows


def _combined_breakdown(connection: sa.Connection, source: str, range_of: str, params: dict[str, Any],
                        measure: str, interval: str, limit: int) -> tuple[dict, dict]:
    """A breakdown whose measure over several values follows from each value's own (``_COMBINE``): one
    read of the rows aggregated per (range, bucket, value); the ranking (desc, then by code point, as
    ``COLLATE "C"``) and the ``other`` group are folded here instead of in a second read."""
    bucket = "hb" if interval == "hour" else _bucket_of_day(interval)
    # The local-date filter hides the row count from the planner, which would then sort to group: hash.
    connection.exec_driver_sql("SET LOCAL enable_sort = off")
    rows = connection.execute(sa.text(f"""
        SELECT r, b, v, {_AGGREGATES[measure]} FROM (
            SELECT {range_of} AS r, {bucket} AS b, v, n, x FROM ({source}) AS s
        ) AS ev WHERE r < 2 GROUP BY r, b, v"""), params).all()
    combine = _COMBINE[measure]
    with localcontext() as context:
        context.prec = MAX_PREC  # numeric sums stay exact, as in PostgreSQL
        totals: dict[str, Any] = {}
        for r, _, v, m in rows:
            if r == 0 and v is not None:
                totals[v] = combine(totals[v], m) if v in totals else m
        ranked = sorted(totals)  # by code point, then (stable) by the measure, largest first
        ranked.sort(key=totals.__getitem__, reverse=True)
        top = {v: rk for rk, v in enumerate(ranked[:limit], start=1)}
        values: dict = {}
        ranks: dict = {}
        for r, b, v, m in rows:
            grp = "none" if v is None else "value" if v in top else "other"
            vkey = v if grp == "value" else None
            key = (r, b, grp, vkey)
            values[key] = combine(values[key], m) if key in values else m
            if vkey is not None:
                ranks[vkey] = top[vkey]
            ranks.setdefault((grp, vkey), None)
    return {key: _number(value) for key, value in values.items()}, ranks


def _few_values(connection: sa.Connection, source: str, range_of: str, params: dict[str, Any], measure: str,
                interval: str, limit: int) -> tuple[tuple[dict, dict] | None, list[str]]:
    """``users`` or a property measure per (range, bucket, value) and the ranking, in one read of the rows:
    the ranking (the measure, or users, per value over [from, to]) comes from the same read by GROUPING
    SETS. When every value seen is ranked (at most ``limit``, all present in [from, to]) there is no
    ``other`` group and this is the answer: ``((values, ranks), top)``; else ``(None, top)``, and the
    caller groups a second read by the ranked list (two reads, as without this one)."""
    bucket = "hb" if interval == "hour" else _bucket_of_day(interval)
    connection.exec_driver_sql("SET LOCAL enable_sort = off")
    if measure == "users":
        sql = f"""
            SELECT r, b, v, whole, count(*) FROM (
                SELECT r, b, v, GROUPING(b) AS whole FROM (
                    SELECT {range_of} AS r, {bucket} AS b, v, user_id FROM ({source}) AS s
                ) AS ev WHERE r < 2 GROUP BY GROUPING SETS ((r, b, v, user_id), (r, v, user_id))
            ) AS per_user GROUP BY r, b, v, whole"""
    else:
        sql = f"""
            SELECT r, b, v, GROUPING(b), {_AGGREGATES[measure]} FROM (
                SELECT {range_of} AS r, {bucket} AS b, v, x FROM ({source}) AS s
            ) AS ev WHERE r < 2 GROUP BY GROUPING SETS ((r, b, v), (r, v))"""
    rows = connection.execute(sa.text(sql), params).all()
    totals = {v: m for r, _, v, whole, m in rows if whole and r == 0 and v is not None}
    ranked = sorted(totals)  # by code point, then (stable) by the measure, largest first
    ranked.sort(key=totals.__getitem__, reverse=True)  # the measures here are never null over a value's rows
    if len(totals) > limit or any(v is not None and v not in totals for _, _, v, _, _ in rows):
        return None, ranked[:limit]
    top = {v: rk for rk, v in enumerate(ranked, start=1)}
    values: dict = {}
    ranks: dict = {}
    for r, b, v, whole, m in rows:
        if whole:
            continue
        grp = "none" if v is None else "value"
        values[(r, b, grp, v)] = _number(m)
        if v is not None:
            ranks[v] = top[v]
        ranks.setdefault((grp, v), None)
    return (values, ranks), ranked


def _daily_users(connection: sa.Connection, scope: Scope, params: dict[str, Any]) -> tuple[dict, dict]:
    """Distinct users per local day, unsegmented: the DAU question itself, routed like /stats/dau (the
    project's DAU counters, or in another timezone the timezone-free rollup where its calendar fits, else
    the scan), so both endpoints answer it alike and as fast."""
    counts = router.answer(connection, DAU, scope, {"from_": params["pfirst"], "to": params["last"]})
    return {(0 if day >= params["first"] else 1, day, "value", None): int(users)
            for day, users in counts.items()}, {}


def _series_order(ranks: dict, breakdown: Breakdown | None) -> list[tuple[str, str | None]]:
    """Value series by rank, then ``other``, then ``none``; without a breakdown, the one series."""
    if breakdown is None:
        return [("value", None)]
    values = sorted((rk, vkey) for vkey, rk in ranks.items() if isinstance(vkey, str) and rk is not None)
    present = {key for key in ranks if isinstance(key, tuple)}
    order = [("value", vkey) for _, vkey in values]
    order += [key for key in (("other", None), ("none", None)) if key in present]
    return order


# Days a user's active-day bitmask can hold: bit i is day lo + i, in a signed bigint.
MASK_DAYS = 63


def _window_masks(connection: sa.Connection, ctes: str, params: dict[str, Any], window: int,
                  wanted: list[Bucket], unique_pairs: bool) -> tuple[dict, dict] | None:
    """Distinct users in the ``window`` local days ending with each bucket's day, per group, when the
    days read (look-back included) fit in a bigint; else None.

    Each user's active days become one bitmask (``bit_or``, so duplicate rows cost nothing and no sort or
    window function is needed); a point's users are those whose mask meets the point's window mask. One
    aggregate per user, then one count per point over the ~users rows, instead of a pass per point.
    """
    lo: date = params["lo"]
    if (params["last"] - lo).days >= MASK_DAYS:
        return None
    days = sorted({b.day for b in wanted})
    params = {**params}
    filters = []
    for i, day in enumerate(days):
        end = (day - lo).days
        params[f"w{i}"] = ((1 << (end + 1)) - 1) ^ ((1 << max(end + 1 - window, 0)) - 1)
        filters.append(f"count(*) FILTER (WHERE m & CAST(:w{i} AS bigint) <> 0)")
    bit = "CAST(1 AS bigint) << (d - CAST(:lo AS date))"
    if unique_pairs:
        # One row per (day, user) in the (user_id, day) index's order: group while reading it, no hashing.
        connection.exec_driver_sql("SET LOCAL enable_hashagg = off")
        per_user = f"""SELECT 'value' AS grp, CAST(NULL AS text) AS vkey, CAST(NULL AS bigint) AS rk,
                              bit_or({bit}) AS m FROM g GROUP BY user_id"""
    else:
        per_user = f"SELECT grp, vkey, rk, bit_or({bit}) AS m FROM g GROUP BY grp, vkey, rk, user_id"
    sql = f"""{ctes}
        SELECT grp, vkey, min(rk), {", ".join(filters)} FROM ({per_user}) AS per_user GROUP BY grp, vkey"""
    values: dict = {}
    ranks: dict = {}
    first = params["first"]
    for grp, vkey, rk, *counts in connection.execute(sa.text(sql), params):
        by_day = dict(zip(days, counts))
        for b in wanted:
            values[(0 if b.day >= first else 1, b.key, grp, vkey)] = by_day[b.day]
        if rk is not None:
            ranks[vkey] = rk
        if any(by_day[b.day] for b in wanted):  # a group seen only in the look-back before the range has no series
            ranks.setdefault((grp, vkey), None)
    return values, ranks


def _window_values(connection: sa.Connection, ctes: str, params: dict[str, Any], window: int,
                   wanted: list[Bucket], unique_pairs: bool) -> tuple[dict, dict]:
    """Distinct users in the ``window`` local days ending with each bucket's day, per group.

    Each (user, active day) covers the days [day, day + window), cut short by the user's next active day,
    so a user's spans never overlap: the users on day D are the spans open on D, a running sum of +1 at
    each span's start and -1 at its end. One pass over the (group, user, day) pairs, however many points;
    SQL counts the spans by (start, end), Python adds up the running sums.
    """
    params = {**params, "window": window}
    if unique_pairs:  # rows are already one per (user, day), in the index's (user_id, day) order: no sort
        spans = f"""SELECT grp, vkey, d AS s, LEAST(d + :window, lead(d) OVER (PARTITION BY user_id ORDER BY d)) AS e
                    FROM g"""
    else:
        spans = f"""SELECT grp, vkey, d AS s,
                           LEAST(d + :window, lead(d) OVER (PARTITION BY grp, vkey, user_id COLLATE "C" ORDER BY d)) AS e
                    FROM (SELECT DISTINCT grp, vkey, user_id, d FROM g) AS pairs"""
    sql = f"""{ctes}
        SELECT spans.grp, spans.vkey, top.rk, s, e, count(*)
        FROM ({spans}) AS spans LEFT JOIN top ON top.v = spans.vkey GROUP BY 1, 2, 3, 4, 5"""
    deltas: dict[tuple, dict[date, int]] = {}
    ranks: dict = {}
    for grp, vkey, rk, start, end, users in connection.execute(sa.text(sql), params):
        changes = deltas.setdefault((grp, vkey), {})
        changes[start] = changes.get(start, 0) + users
        changes[end] = changes.get(end, 0) - users
        if rk is not None:
            ranks[vkey] = rk
    steps: dict[tuple, tuple[list[date], list[int]]] = {}
    for key, changes in deltas.items():
        days, counts, running = [], [], 0
        for day in sorted(changes):
            running += changes[day]
            days.append(day)
            counts.append(running)
        steps[key] = (days, counts)
    values: dict = {}
    first = params["first"]
    for (grp, vkey), (days, counts) in steps.items():
        seen = False
        for b in wanted:
            i = bisect.bisect_right(days, b.day) - 1
            value = counts[i] if i >= 0 else 0
            r = 0 if b.day >= first else 1
            values[(r, b.key, grp, vkey)] = value
            seen |= value > 0
        if seen:  # a group seen only in the look-back before the range has no series
            ranks.setdefault((grp, vkey), None)
    return values, ranks


# --- stickiness --------------------------------------------------------------------------------------


def _stickiness(connection: sa.Connection, scope: Scope, rollups: bool, *, from_: date, to: date,
                interval: str) -> list[dict]:
    """Return ``[{"intervals": n, "users": m}]`` for n = 1..(days or ISO weeks touching [from_, to]): the
    users with a matching event in exactly n of them."""
    weeks = buckets(connection, scope.tz, interval, from_, to)
    count = len(weeks)
    params: dict[str, Any] = {"tz": scope.tz, "lo": from_, "first": from_, "last": to}
    params["lo_at"], params["hi_at"] = _instants(connection, scope.tz, from_, to + timedelta(days=1))
    source = _source_sql(rollups, scope, "users", interval, None, None, params)
    if rollups and interval == "day":
        # The rollup holds one row per (day, user): a user's days are their rows, counted while reading the
        # (user_id, day) index in order. Hashing 100k text keys instead costs about twice as much.
        connection.exec_driver_sql("SET LOCAL enable_hashagg = off")
        per_user = f"SELECT user_id, count(*) AS n FROM ({source}) AS s GROUP BY user_id"
    elif rollups and (to - from_).days < MASK_DAYS:
        # Each user's days as one bitmask, built while reading the (user_id, day) index in order; a user's
        # weeks are the week masks it meets. No DISTINCT (a sort per user) over the weeks.
        connection.exec_driver_sql("SET LOCAL enable_hashagg = off")
        weeks_met = []
        for i, week in enumerate(weeks):
            start = max((week.day - from_).days, 0)
            end = min((week.day - from_).days + 7, (to - from_).days + 1)
            params[f"w{i}"] = ((1 << end) - 1) ^ ((1 << start) - 1)
            weeks_met.append(f"CAST(m & CAST(:w{i} AS bigint) <> 0 AS int)")
        per_user = f"""SELECT {" + ".join(weeks_met)} AS n FROM (
                           SELECT bit_or(CAST(1 AS bigint) << (d - CAST(:lo AS date))) AS m FROM ({source}) AS s
                           GROUP BY user_id
                       ) AS masks"""
    else:
        per_user = f"SELECT user_id, count(DISTINCT {_bucket_of_day(interval)}) AS n FROM ({source}) AS s GROUP BY 1"
    sql = f"SELECT n, count(*) FROM ({per_user}) AS per_user GROUP BY n"
    users = dict(connection.execute(sa.text(sql), params).all())
    return [{"intervals": n, "users": users.get(n, 0)} for n in range(1, count + 1)]


# --- lifecycle ---------------------------------------------------------------------------------------


def _lifecycle(connection: sa.Connection, scope: Scope, rollups: bool, *, from_: date, to: date,
               interval: str) -> list[dict]:
    """Return ``[{"bucket", "new", "returning", "resurrecting", "dormant"}]`` per bucket touching
    [from_, to] (PostHog's meanings): new = first-ever matching event (over all stored events) in this
    bucket; returning = active in this and the previous bucket; resurrecting = active, not new, not active
    in the previous bucket; dormant = minus those active in the previous bucket and not in this one. The
    first bucket's previous bucket is the whole calendar bucket before it."""
    current = buckets(connection, scope.tz, interval, from_, to)
    step = f"1 {interval}"
    before = connection.execute(sa.text("SELECT CAST(CAST(:b AS timestamp) - CAST(:step AS interval) AS date)"),
                                {"b": current[0].key, "step": step}).scalar_one()
    params: dict[str, Any] = {"tz": scope.tz, "lo": before, "first": from_, "last": to, "step": step,
                              "b0": current[0].key}
    params["lo_at"], params["hi_at"] = _instants(connection, scope.tz, before, to + timedelta(days=1))
    source = _source_sql(rollups, scope, "users", interval, None, None, params)
    # Days before `from` count only towards the bucket before the first one.
    bucket = _bucket_of_day(interval)
    if scope.segments:
        # First-ever matching event only for the users that can be new: no earlier active bucket here.
        firsts = f"""SELECT user_id, min(occurred_at) AS first_at FROM events
                     WHERE {conditions_sql(scope.segments, params)}
                       AND user_id IN (SELECT user_id FROM seq WHERE pb IS NULL AND b >= :b0) GROUP BY 1"""
        materialized = "MATERIALIZED"
    else:
        firsts = "SELECT user_id, first_at FROM rollup_user_first"
        materialized = "NOT MATERIALIZED"  # read once: the window runs in the index's order, no copy
    prev_b = "CAST(CAST(s.b AS timestamp) - CAST(:step AS interval) AS date)"
    if interval == "day" and rollups:
        # One row per (day, user) already, read in the (user_id, day) index's order: no sort.
        act = f"SELECT d AS b, user_id FROM ({source}) AS s"
        partition = "user_id"
    else:
        act = f"SELECT DISTINCT {bucket} AS b, user_id FROM ({source}) AS s WHERE d >= :first OR {bucket} < :b0"
        partition = 'user_id COLLATE "C"'
    # One pass over each user's active buckets in order: per bucket, the active users and those also
    # active in the bucket before (returning); only a user without an earlier active bucket here can be
    # new (their first-ever bucket, looked up, is this one). The rest follows by arithmetic:
    # resurrecting = active - returning - new, dormant = active in the bucket before - returning.
    seq = f"""WITH seq AS {materialized} (
            SELECT b, user_id, lag(b) OVER (PARTITION BY {partition} ORDER BY b) AS pb FROM ({act}) AS act
        )"""
    if rollups and interval != "day" and (to - before).days < MASK_DAYS:
        # Few buckets: a bitmask per user and a few counts beat the ordered pass (for 30 days they do not).
        counts = _lifecycle_masks(connection, params, current, before, interval)
    elif interval == "day" and not scope.segments:
        # A day's new users are exactly those whose first-ever event is on it (that event makes them active
        # then): count them from the first_at index apart, and the pass needs no join.
        sql = f"{seq} SELECT s.b, count(*), count(*) FILTER (WHERE s.pb = {prev_b}) FROM seq s GROUP BY s.b"
        counts = {b: [active, ret, 0] for b, active, ret in connection.execute(sa.text(sql), params)}
        for b, new in connection.execute(sa.text("""
                SELECT CAST(first_at AT TIME ZONE :tz AS date) AS b, count(*) FROM rollup_user_first
                WHERE first_at >= :lo_at AND first_at < :hi_at AND CAST(first_at AT TIME ZONE :tz AS date) >= :first
                  AND CAST(first_at AT TIME ZONE :tz AS date) <= :last GROUP BY 1"""), params):
            counts.setdefault(b, [0, 0, 0])[2] = new
    else:
        sql = f"""{seq}, firsts AS (
                SELECT user_id, {_bucket_of_day(interval, "CAST(first_at AT TIME ZONE :tz AS date)")} AS fb
                FROM ({firsts}) AS f
            )
            SELECT s.b, count(*), count(*) FILTER (WHERE s.pb = {prev_b}), count(*) FILTER (WHERE f.fb = s.b)
            FROM seq s LEFT JOIN firsts f ON s.pb IS NULL AND f.user_id = s.user_id
            GROUP BY s.b"""
        counts = {b: [active, ret, new] for b, active, ret, new in connection.execute(sa.text(sql), params)}
    rows = []
    previous_key = before
    for b in current:
        active, ret, new = counts.get(b.key, (0, 0, 0))
        dormant = counts.get(previous_key, (0, 0, 0))[0] - ret
        rows.append({"bucket": b.key, "new": new, "returning": ret, "resurrecting": active - ret - new,
                     "dormant": -dormant})
        previous_key = b.key
    return rows


def _lifecycle_masks(connection: sa.Connection, params: dict[str, Any], current: list[Bucket], before: date,
                     interval: str) -> dict[date, list[int]]:
    """``{bucket: [active, returning, new]}`` (and the bucket before the first: its active users) from the
    project rollups, when the days from ``before`` fit in a bigint: each user's active days as one bitmask,
    built while reading the (user_id, day) index in order, and their first-ever bucket; a bucket's users
    are those whose mask meets the bucket's days (the first bucket's from ``from`` on)."""
    params = {**params}
    last = (params["last"] - before).days
    first = (params["first"] - before).days
    starts = [before] + [b.day for b in current]
    filters = []
    for i, start in enumerate(starts):
        lo = max((start - before).days, first if i == 1 else 0)
        hi = (starts[i + 1] - before).days - 1 if i + 1 < len(starts) else last
        params[f"m{i}"] = ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)
        params[f"b{i}"] = start
        meets = f"m & CAST(:m{i} AS bigint) <> 0"
        filters.append(f"count(*) FILTER (WHERE {meets})")
        if i:
            filters.append(f"count(*) FILTER (WHERE {meets} AND m & CAST(:m{i - 1} AS bigint) <> 0)")
            filters.append(f"count(*) FILTER (WHERE {meets} AND fb = :b{i})")
    connection.exec_driver_sql("SET LOCAL enable_hashagg = off")
    row = connection.execute(sa.text(f"""
        SELECT {", ".join(filters)} FROM (
            SELECT masks.m, {_bucket_of_day(interval, "CAST(f.first_at AT TIME ZONE :tz AS date)")} AS fb
            FROM (SELECT user_id, bit_or(CAST(1 AS bigint) << (day - CAST(:lo AS date))) AS m
                  FROM rollup_local_day_user WHERE day BETWEEN :lo AND :last GROUP BY user_id) AS masks
            LEFT JOIN rollup_user_first AS f ON f.user_id = masks.user_id
        ) AS users"""), params).one()
    counts = {before: [row[0], 0, 0]}
    for i, b in enumerate(current):
        counts[b.key] = list(row[1 + 3 * i: 4 + 3 * i])
    return counts


# --- routing (router.py): the project rollups where they hold the answer, else a scan of events ----------
# The timezone-free rollups cannot tell a user's buckets apart inside a UTC day, so these questions have no
# utc_day_rollup variant: the router never picks it (the fit is always False) and it is the scan.


def _range_span(*, from_: date, to: date, **_: Any) -> tuple[date, date]:
    return from_, to


def _variant(question, rollups: bool):
    def variant(connection: sa.Connection, scope: Scope, **arguments: Any) -> list[dict]:
        return question(connection, scope, rollups, **arguments)
    return variant


def _question(name: str, question) -> Question:
    scan = _variant(question, False)
    return Question(name, _variant(question, True), scan, scan, _range_span, lambda calendar: False)


TRENDS = _question("trends", _trends)
STICKINESS = _question("stickiness", _stickiness)
LIFECYCLE = _question("lifecycle", _lifecycle)
QUESTIONS = {question.name: question for question in (TRENDS, STICKINESS, LIFECYCLE)}


def trends(connection: sa.Connection, scope: Scope, *, from_: date, to: date, measure: str = "events",
           property: str | None = None, interval: str = "day", breakdown: Breakdown | None = None,
           limit: int = 25, compare: str | None = None, kind: str | None = None) -> list[dict]:
    """Return one zero-filled series per breakdown group (see ``_trends``), from the routed variant."""
    arguments = {"from_": from_, "to": to, "measure": measure, "property": property, "interval": interval,
                 "breakdown": breakdown, "limit": limit, "compare": compare}
    return router.answer(connection, TRENDS, scope, arguments, kind)


def stickiness(connection: sa.Connection, scope: Scope, *, from_: date, to: date, interval: str = "day",
               kind: str | None = None) -> list[dict]:
    """Return ``[{"intervals", "users"}]`` (see ``_stickiness``), from the routed variant."""
    return router.answer(connection, STICKINESS, scope, {"from_": from_, "to": to, "interval": interval}, kind)


def lifecycle(connection: sa.Connection, scope: Scope, *, from_: date, to: date, interval: str = "day",
              kind: str | None = None) -> list[dict]:
    """Return ``[{"bucket", "new", "returning", "resurrecting", "dormant"}]`` (see ``_lifecycle``)."""
    return router.answer(connection, LIFECYCLE, scope, {"from_": from_, "to": to, "interval": interval}, kind)
