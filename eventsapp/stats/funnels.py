"""Funnels: of the users who did step 1, how many went on to do step 2, then step 3, within a window.

Definitions (README "Funnels" states them for users):

- An **attempt** starts at any event matching step 1 whose local date (``AT TIME ZONE tz``, computed by
  PostgreSQL) is in [from, to]; later steps may fall after ``to``. Its window closes ``window`` exact
  seconds after the entry event (inclusive).
- ``ordered``: step k+1 is completed by the earliest event, other than those already used by the attempt,
  matching it at or after step k's time and inside the window. Events sharing a timestamp may complete
  consecutive steps; when several events of one timestamp could, they are assigned so that as many
  consecutive steps as possible complete at that timestamp (a small bipartite matching), so one event
  never completes two steps and the answer does not depend on how ties are stored.
- ``strict``: as ordered, and the attempt stops when another event of the user (any event in scope, not
  only funnel events) lies strictly between two consecutive steps.
- ``any``: the entry is step 1; the attempt reached k when k of the n steps (entry included) were
  completed inside the window, each by a distinct event (a maximum matching of events to steps 2..n, grown
  event by event in time order; the k-th completion time is when the matching first reached k).
- ``exclude FILTER@i-j``: an event matching FILTER, not one of the attempt's step events, strictly after
  step i and strictly before step j (or, when step j was not reached, up to the window's end) voids the
  attempt. An attempt that did not reach step i is not affected.
- A user counts once, at the furthest step any non-void attempt reached; the reported attempt (times,
  breakdown value) is the earliest entry that reached it.

Two implementations of the same definition: ``_ordered_sql`` (ordered, steps that no single event can
match twice, no exclusions: the common case, computed by window functions in PostgreSQL) and
``_general`` (every case: a pass in Python over the user's funnel events streamed in time order).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from ..errors import ApiError
from . import router
from .funnel_schemas import Exclusion, StepFilter
from .router import Question, Scope
from .schemas import conditions_sql

RATIO_PLACES = 4
SECONDS_PLACES = 3
STREAM_ROWS = 20000


# --- SQL helpers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bounds:
    """Instants to read: every entry lies in [lo, entry_hi) and every event an attempt can use in [lo, hi)."""

    lo: datetime
    hi: datetime


def _bounds(connection: sa.Connection, tz: str, first: date, last: date, window: int) -> _Bounds:
    # PostgreSQL places local midnights; a day of margin on each side keeps every event whose local date
    # is in range (the local date itself is checked per event), whatever a DST change does to midnight.
    lo, hi = connection.execute(sa.text(
        "SELECT (CAST(:first AS timestamp) AT TIME ZONE :tz) - interval '1 day',"
        " (CAST(:after AS timestamp) AT TIME ZONE :tz) + interval '1 day' + make_interval(secs => :window)"),
        {"tz": tz, "first": first, "after": last + timedelta(days=1), "window": window}).one()
    return _Bounds(lo, hi)


def _entry_sql() -> str:
    return "(occurred_at AT TIME ZONE :tz)::date BETWEEN :first AND :last"


# --- the question ---------------------------------------------------------------------------------


def funnel(connection: sa.Connection, scope: Scope, *, from_: date, to: date, step: Sequence[StepFilter],
           window: int = 86400, order: str = "ordered", exclude: Sequence[Exclusion] = (),
           breakdown: str | None = None, limit: int = 25, kind: str | None = None) -> list[dict]:
    """Return one row per (breakdown group, step): users reaching at least that step, conversion from
    step 1 and from the previous step (4 decimals), median and mean seconds from the previous step.

    Groups: without a breakdown one group (``group`` "value", ``breakdown`` null); with
    ``breakdown=properties.KEY`` the top ``limit`` values of KEY on the counted attempts' entry events
    (by users, then value by code point), then ``other`` (the remaining values) and ``none`` (missing,
    null or empty), each only when it has users.
    """
    arguments = {"from_": from_, "to": to, "step": tuple(step), "window": window, "order": order,
                 "exclude": tuple(exclude), "breakdown": breakdown, "limit": limit}
    return router.answer(connection, FUNNEL, scope, arguments, kind)


def funnel_from_scan(connection: sa.Connection, scope: Scope, *, from_: date, to: date,
                     step: Sequence[StepFilter], window: int, order: str, exclude: Sequence[Exclusion],
                     breakdown: str | None, limit: int) -> list[dict]:
    """The funnel from ``events`` (no rollup keeps the order of a user's events)."""
    steps = tuple(step)
    key = breakdown[len("properties."):] if breakdown else None
    bounds = _bounds(connection, scope.tz, from_, to, window)
    params: dict[str, Any] = {"tz": scope.tz, "first": from_, "last": to, "lo": bounds.lo, "hi": bounds.hi,
                              "window": window, "limit": limit, "bkey": key}
    disjoint = all(a.disjoint_from(b) for i, a in enumerate(steps) for b in steps[i + 1:])
    if order == "ordered" and disjoint and not exclude:
        groups = _ordered_sql(connection, scope, steps, params, breakdown=key is not None)
    else:
        users = _general(connection, scope, steps, params, order=order, window=window, exclude=exclude,
                         breakdown=key is not None)
        groups = _aggregate(users, len(steps), limit, breakdown=key is not None)
    return _rows(groups, steps)


@dataclass
class _Group:
    group: str  # value | other | none
    value: str | None
    users: list[int]  # users reaching at least step k+1
    median: list[float | None]  # seconds from the previous step, index k for step k+1
    avg: list[float | None]


def _rows(groups: list[_Group], steps: Sequence[StepFilter]) -> list[dict]:
    rows = []
    for g in groups:
        for k, step in enumerate(steps):
            users = g.users[k]
            first, previous = g.users[0], g.users[k - 1] if k else g.users[0]
            rows.append({
                "step": k + 1, "filter": step.text, "group": g.group, "breakdown": g.value, "users": users,
                "from_start": round(users / first, RATIO_PLACES) if first else 0.0,
                "from_previous": round(users / previous, RATIO_PLACES) if previous else 0.0,
                "median_seconds": None if g.median[k] is None else round(g.median[k], SECONDS_PLACES),
                "avg_seconds": None if g.avg[k] is None else round(g.avg[k], SECONDS_PLACES),
            })
    return rows


def _order_groups(groups: list[_Group], ranks: dict[str | None, int]) -> list[_Group]:
    kind_order = {"value": 0, "other": 1, "none": 2}
    return sorted(groups, key=lambda g: (kind_order[g.group], ranks.get(g.value, 0)))


# --- ordered funnels in SQL -----------------------------------------------------------------------


def _ordered_sql(connection: sa.Connection, scope: Scope, steps: Sequence[StepFilter], params: dict[str, Any],
                 *, breakdown: bool) -> list[_Group]:
    """Ordered funnel whose steps no event can match twice, in one statement.

    Each event matches at most one step, so step k+1 of an attempt is simply the earliest step-(k+1) event
    at or after step k (events at one instant are distinct events), and the greedy chain of times from any
    event depends only on its time, and is later (step by step) for a later start. So, walking each user's
    funnel events backwards in time, ``min`` over the step-(k+1) events at or after a step-k event of their
    chains ``c_{k+1}..c_n`` is the chain of the earliest of them: one window pass per step, scalars only.
    The entry's chain, cut at the window, is its attempt; per user, the attempts reaching the furthest
    step are combined the same way (the earliest entry has the earliest chain).

    Most entries have no step-2 event within their window, so chains are computed only for entries with
    a step-2 event in their ``window``-long bucket or the next (hash joins, no sort), over the later-step
    events in those buckets; every other entrant stops at step 1.
    """
    n = len(steps)
    segment = conditions_sql(scope.segments, params, "seg")
    window_end = "t + make_interval(secs => :window)"
    in_range = f"occurred_at >= :lo AND occurred_at < :hi AND {segment}"
    # Buckets of `window` seconds (date_bin: exact integer microseconds): an attempt's window
    # [t, t + window] lies in the entry's bucket and the next one.
    bucket = "date_bin(make_interval(secs => :window), occurred_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
    stride = "make_interval(secs => :window)"
    carry = ", id, bd" if breakdown else ""
    entry_extra = ", event_id AS id, NULLIF(properties ->> :bkey, '') AS bd" if breakdown else ""
    # Only entries with a step-2 event in their bucket or the next can go past step 1 (most cannot): the
    # chains are computed for those, over the later-step events in their buckets; every other entrant
    # stops at step 1 and needs only its first entry (for the breakdown value).
    ctes = [
        f"entries AS MATERIALIZED (SELECT user_id, occurred_at AS t, {bucket} AS b{entry_extra} FROM events"
        f" WHERE {in_range} AND {conditions_sql(steps[0].conditions, params, 's1')} AND {_entry_sql()})",
        f"seconds AS MATERIALIZED (SELECT user_id, {bucket} AS b FROM events"
        f" WHERE {in_range} AND {conditions_sql(steps[1].conditions, params, 's2')})",
        f"near AS MATERIALIZED (SELECT * FROM entries WHERE (user_id, b) IN"
        f" (SELECT user_id, b FROM seconds UNION ALL SELECT user_id, b - {stride} FROM seconds))",
        f"buckets AS MATERIALIZED (SELECT user_id, b FROM near UNION SELECT user_id, b + {stride} FROM near)",
    ]
    parts = [f"SELECT user_id, t, 1 AS s{carry} FROM near"]
    for k, step in enumerate(steps[1:], 2):
        nulls = ", NULL::uuid, NULL::text" if breakdown else ""
        where = f"{in_range} AND {conditions_sql(step.conditions, params, f'x{k}')}"
        parts.append(f"SELECT user_id, occurred_at AS t, {k} AS s{nulls} FROM events WHERE {where}"
                     f" AND (user_id, {bucket}) IN (SELECT user_id, b FROM buckets)")
    chain = [f"c{j}" for j in range(2, n + 1)]
    # Partitions by (hash, user): the sort compares an integer first, not text.
    layers = [f"l{n} AS (SELECT hashtext(user_id) AS h, user_id, t, s{carry}, "
              + ", ".join(f"NULL::timestamptz AS c{j}" for j in range(2, n + 1))
              + f" FROM ({' UNION ALL '.join(parts)}) AS matched)"]
    over = "OVER (PARTITION BY h, user_id ORDER BY t DESC)"  # peers (same instant) included
    for k in range(n - 1, 0, -1):
        columns = []
        for j in range(2, n + 1):
            if j <= k:
                columns.append(f"c{j}")
            elif j == k + 1:
                columns.append(f"CASE WHEN s = {k} THEN min(t) FILTER (WHERE s = {j}) {over} END AS c{j}")
            else:
                columns.append(f"CASE WHEN s = {k} THEN min(c{j}) FILTER (WHERE s = {k + 1}) {over} "
                               f"ELSE c{j} END AS c{j}")
        layers.append(f"l{k} AS (SELECT h, user_id, t, s{carry}, {', '.join(columns)} FROM l{k + 1} "
                      f"WHERE s <= {k + 1})")
    reached = "CASE " + " ".join(f"WHEN c{k} <= {window_end} THEN {k}" for k in range(n, 1, -1)) + " ELSE 1 END"
    # Per user, in one aggregate over the entries (no window pass for "furthest"): the smallest
    # [t + (n - reached) * 1000 years, t, c2..cn] is the earliest entry among those reaching the furthest
    # step (entries lie in one range of at most a few years, so the offset dominates). Exact elapsed
    # seconds, not calendar years: adding years would move Feb 29 and follow the session's DST.
    rank_key = f"t + ({n} - reached) * interval '31536000000 seconds'"
    per_user = f"max(reached) AS reached, min(ARRAY[{rank_key}, t, {', '.join(chain)}]) AS a"
    if breakdown:
        per_user += f", (array_agg(bd ORDER BY {rank_key}, id))[1] AS bd"
    else:
        per_user += ", NULL::text AS bd"
    gaps = ", ".join(
        f"count(*) FILTER (WHERE reached >= {k}),"
        f" percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a[{k + 1}] - a[{k}]))"
        f"   FILTER (WHERE reached >= {k}),"
        f" avg(extract(epoch FROM a[{k + 1}] - a[{k}])) FILTER (WHERE reached >= {k})"
        for k in range(2, n + 1))
    if breakdown:
        # The earliest entry (then the smallest event_id) of each user, sorting only the ties of min(t).
        firsts = """firsts AS (
            SELECT DISTINCT ON (e.user_id) e.user_id, e.bd FROM entries e
            JOIN (SELECT user_id, min(t) AS t FROM entries GROUP BY user_id) m
              ON m.user_id = e.user_id AND m.t = e.t
            ORDER BY e.user_id, e.id
        )"""
        first_bd = "CASE WHEN c.reached > 1 THEN c.bd ELSE f.bd END"
    else:
        firsts = "firsts AS (SELECT DISTINCT user_id FROM entries)"
        first_bd = "NULL::text"
    if breakdown:
        grouping = """ranked AS (
            SELECT bd, row_number() OVER (ORDER BY count(*) DESC, bd COLLATE "C") AS rank
            FROM counted WHERE bd IS NOT NULL GROUP BY bd
        ),
        labelled AS (
            SELECT CASE WHEN x.bd IS NULL THEN 'none' WHEN r.rank <= :limit THEN 'value' ELSE 'other' END AS grp,
                   CASE WHEN r.rank <= :limit THEN x.bd END AS value, r.rank, x.*
            FROM counted x LEFT JOIN ranked r ON r.bd = x.bd
        )"""
    else:
        grouping = "labelled AS (SELECT 'value' AS grp, NULL::text AS value, NULL::bigint AS rank, * FROM counted)"
    sql = f"""
        WITH {', '.join(ctes + layers)},
        chained AS (
            SELECT user_id, {per_user}
            FROM (SELECT *, {reached} AS reached FROM l1 WHERE s = 1) AS attempts GROUP BY h, user_id
        ),
        {firsts},
        counted AS (
            SELECT COALESCE(c.reached, 1) AS reached, c.a, {first_bd} AS bd
            FROM firsts f LEFT JOIN chained c ON c.user_id = f.user_id AND c.reached > 1
        ),
        {grouping}
        SELECT grp, value, min(rank), count(*), {gaps} FROM labelled GROUP BY grp, value
    """
    groups = []
    ranks: dict[str | None, int] = {}
    # The entry condition (a local date) defeats row estimates, and with a few hundred estimated entries
    # the planner probes the user index once per bucket: hash joins are right at every size here.
    previous = connection.exec_driver_sql(
        "SELECT current_setting('enable_nestloop'), set_config('enable_nestloop', 'off', true)").scalar_one()
    rows = connection.execute(sa.text(sql), params).all()
    connection.execute(sa.text("SELECT set_config('enable_nestloop', :previous, true)"),
                       {"previous": previous})
    for row in rows:
        grp, value, rank, total, *rest = row
        users, median, avg = [int(total)], [None], [None]
        for k in range(n - 1):
            count, med, mean = rest[3 * k: 3 * k + 3]
            users.append(int(count))
            median.append(None if med is None else float(med))
            avg.append(None if mean is None else float(mean))
        groups.append(_Group(grp, value, users, median, avg))
        ranks[value] = rank or 0
    if not breakdown and not groups:
        groups = [_Group("value", None, [0] * n, [None] * n, [None] * n)]
    return _order_groups(groups, ranks)


# --- every case in Python -------------------------------------------------------------------------


@dataclass(slots=True)
class _Event:
    t: float  # epoch seconds (float8 keeps microseconds distinct for these dates)
    event_id: int  # position in the user's events, which are ordered by time then event_id
    mask: int  # bit k: matches step k+1
    xmask: int  # bit e: matches exclusion e
    entry: bool
    bd: str | None
    before: float | None  # strict only: the user's latest event time (any event in scope) before t


@dataclass(slots=True)
class _Attempt:
    entry: _Event
    times: list[float] = field(default_factory=list)
    used: set[int] = field(default_factory=set)


def _general(connection: sa.Connection, scope: Scope, steps: Sequence[StepFilter], params: dict[str, Any], *,
             order: str, window: int, exclude: Sequence[Exclusion], breakdown: bool) -> list[tuple]:
    """Per user with a counted attempt: ``(reached, [t_1..t_reached], breakdown value)``.

    Streams the user's events in scope matching a step or an exclusion, between the first possible entry
    and the last window's end, ordered by user and time. For ``strict`` each also carries the time of the
    user's previous event of any kind (a window aggregate over all events in scope), which tells whether
    something lies between two steps without sending every event to Python.
    """
    step_sql = [conditions_sql(s.conditions, params, f"s{k}") for k, s in enumerate(steps)]
    excl_sql = [conditions_sql(x.filter.conditions, params, f"x{e}") for e, x in enumerate(exclude)]
    segment = conditions_sql(scope.segments, params, "seg")
    mask = " + ".join(f"(CASE WHEN {m} THEN {1 << k} ELSE 0 END)" for k, m in enumerate(step_sql))
    xmask = " + ".join(f"(CASE WHEN {m} THEN {1 << e} ELSE 0 END)" for e, m in enumerate(excl_sql)) or "0"
    wanted = " OR ".join(step_sql + excl_sql)
    bd = "NULLIF(properties ->> :bkey, '')" if breakdown else "NULL::text"
    columns = f"""user_id, occurred_at, event_id, {mask} AS mask, {xmask} AS xmask,
                  COALESCE({step_sql[0]} AND {_entry_sql()}, FALSE) AS entry, {bd} AS bd"""
    if order == "strict":
        sql = f"""
            SELECT user_id, extract(epoch FROM occurred_at)::float8, mask, xmask, entry, bd,
                   extract(epoch FROM before)::float8
            FROM (
                SELECT {columns}, ({wanted}) AS wanted,
                       max(occurred_at) OVER (PARTITION BY user_id COLLATE "C" ORDER BY occurred_at
                           RANGE BETWEEN UNBOUNDED PRECEDING AND '1 microsecond' PRECEDING) AS before
                FROM events WHERE occurred_at >= :lo AND occurred_at < :hi AND {segment}
            ) AS all_events
            WHERE wanted
            ORDER BY user_id COLLATE "C", occurred_at, event_id
        """
    else:
        sql = f"""
            SELECT user_id, extract(epoch FROM occurred_at)::float8, mask, xmask, entry, bd, NULL::float8
            FROM (SELECT {columns} FROM events
                  WHERE occurred_at >= :lo AND occurred_at < :hi AND {segment} AND ({wanted})) AS funnel_events
            ORDER BY user_id COLLATE "C", occurred_at, event_id
        """
    limit = float(window)
    counted = []
    # The statement timeout covers each FETCH, not the Python between them: keep the same budget here.
    timeout_ms = _statement_timeout_ms(connection)
    deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
    # psycopg2's own server-side cursor, in the read's transaction: SQLAlchemy's per-row result machinery
    # costed more than the query itself at a million rows.
    raw = connection.connection.dbapi_connection
    with raw.cursor(name="funnel_events") as cursor:
        cursor.itersize = STREAM_ROWS
        cursor.execute(str(sa.text(sql).compile(dialect=connection.dialect)), params)
        for n, (_, rows) in enumerate(groupby(cursor, key=itemgetter(0))):
            events = [_Event(t, i, m, x, entry, value, before)
                      for i, (_, t, m, x, entry, value, before) in enumerate(rows)]
            best = _best_attempt(events, len(steps), order, limit, exclude)
            if best is not None:
                counted.append((len(best.times), best.times, best.entry.bd))
            if deadline is not None and n % 1000 == 0 and time.monotonic() > deadline:
                raise ApiError(f"The query took longer than {timeout_ms} ms and was cancelled; narrow the range "
                               "or retry later.", status_code=503, headers={"Retry-After": "5"})
    return counted


def _statement_timeout_ms(connection: sa.Connection) -> int:
    """The read's statement timeout (run_read sets it), in milliseconds; 0 when there is none."""
    return int(connection.exec_driver_sql(
        "SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'").scalar_one())


def _best_attempt(events: list[_Event], n: int, order: str, limit: float,
                  exclude: Sequence[Exclusion]) -> _Attempt | None:
    """The earliest non-void attempt reaching the furthest step, or None when every attempt is void."""
    excluders = [e for e in events if e.xmask]  # checked per attempt: keep that list short
    if not any(e.mask >> 1 for e in events):  # no later step at all: every attempt stops at step 1
        for entry in (e for e in events if e.entry):
            attempt = _Attempt(entry, [entry.t], {entry.event_id})
            if not excluders or not _voided(attempt, excluders, exclude, limit):
                return attempt
        return None
    best: _Attempt | None = None
    instants = [list(g) for _, g in groupby(events, key=lambda e: e.t)]
    for gi, group in enumerate(instants):
        for entry in group:
            if not entry.entry:
                continue
            attempt = (_any_order if order == "any" else _in_order)(instants, gi, entry, n, order, limit)
            if excluders and _voided(attempt, excluders, exclude, limit):
                continue
            if best is None or len(attempt.times) > len(best.times):
                best = attempt
                if len(best.times) == n:
                    return best
    return best


def _match(candidates: list[_Event], step: int, partner: dict[int, int]) -> bool:
    """Kuhn's step from the step side: give ``step`` (a bit) an event of ``candidates``, moving events
    already given to other steps where needed. ``partner`` (step -> candidate index) changes only on
    success."""
    owner = {i: s for s, i in partner.items()}

    def augment(s: int, seen: set[int]) -> bool:
        for i, event in enumerate(candidates):
            if event.mask >> s & 1 and i not in seen:
                seen.add(i)
                if i not in owner or augment(owner[i], seen):
                    partner[s] = i
                    owner[i] = s
                    return True
        return False

    return augment(step, set())


def _in_order(instants: list[list[_Event]], gi: int, entry: _Event, n: int, order: str,
              limit: float) -> _Attempt:
    attempt = _Attempt(entry, [entry.t], {entry.event_id})
    end = entry.t + limit
    here = gi
    while len(attempt.times) < n:
        group = instants[here]
        if group[0].t > end:
            break
        candidates = [e for e in group if e.event_id not in attempt.used]
        partner: dict[int, int] = {}
        # As many consecutive steps as distinct events of this instant can complete.
        for s in range(len(attempt.times), n):
            if not _match(candidates, s, partner):
                break
        for s in sorted(partner):
            attempt.times.append(group[0].t)
            attempt.used.add(candidates[partner[s]].event_id)
        if len(attempt.times) == n:
            break
        # The next instant with an event for the next step.
        following = here + 1
        wanted_bit = 1 << len(attempt.times)
        while (following < len(instants) and instants[following][0].t <= end
               and not any(e.mask & wanted_bit for e in instants[following])):
            following += 1
        if following >= len(instants) or instants[following][0].t > end:
            break
        if order == "strict" and instants[following][0].before > attempt.times[-1]:
            break  # strict: some event of the user lies strictly between this step and that instant
        here = following
    return attempt


def _any_order(instants: list[list[_Event]], gi: int, entry: _Event, n: int, order: str,
               limit: float) -> _Attempt:
    attempt = _Attempt(entry, [entry.t], {entry.event_id})
    end = entry.t + limit
    candidates: list[_Event] = []
    partner: dict[int, int] = {}  # step (1..n-1, 0-based bit) -> index in candidates
    for group in instants[gi:]:
        if group[0].t > end:
            break
        for event in group:
            if event is entry or not event.mask >> 1:
                continue
            candidates.append(event)
            # The matching grows by one exactly when an augmenting path starts at the new event.
            if _augment_from(candidates, len(candidates) - 1, partner, n):
                attempt.times.append(event.t)
            if len(attempt.times) == n:
                break
        if len(attempt.times) == n:
            break
    attempt.used |= {candidates[i].event_id for i in partner.values()}
    return attempt


def _augment_from(candidates: list[_Event], start: int, partner: dict[int, int], n: int) -> bool:
    """Kuhn's step: find an augmenting path from candidate ``start`` to a free step (bits 1..n-1), and
    flip it. ``partner`` is changed only along a path that succeeds."""

    def visit(i: int, seen: set[int]) -> bool:
        for s in range(1, n):
            if candidates[i].mask >> s & 1 and s not in seen:
                seen.add(s)
                if s not in partner or visit(partner[s], seen):
                    partner[s] = i
                    return True
        return False

    return visit(start, set())


def _voided(attempt: _Attempt, events: list[_Event], exclude: Sequence[Exclusion], limit: float) -> bool:
    reached = len(attempt.times)
    end = attempt.entry.t + limit
    for e, exclusion in enumerate(exclude):
        if reached < exclusion.first:
            continue
        start = attempt.times[exclusion.first - 1]
        stop = attempt.times[exclusion.last - 1] if reached >= exclusion.last else None
        for event in events:
            if not event.xmask >> e & 1 or event.event_id in attempt.used or event.t <= start:
                continue
            if (event.t < stop) if stop is not None else (event.t <= end):
                return True
    return False


def _aggregate(users: list[tuple], n: int, limit: int, *, breakdown: bool) -> list[_Group]:
    """Groups of per-user results, as ``_ordered_sql`` computes them in SQL."""
    ranks: dict[str | None, int] = {}
    if breakdown:
        counts: dict[str, int] = {}
        for _, _, value in users:
            if value is not None:
                counts[value] = counts.get(value, 0) + 1
        for rank, value in enumerate(sorted(counts, key=lambda v: (-counts[v], v)), 1):
            ranks[value] = rank
    members: dict[tuple[str, str | None], list[tuple]] = {}
    for reached, times, value in users:
        if not breakdown:
            label = ("value", None)
        elif value is None:
            label = ("none", None)
        elif ranks[value] <= limit:
            label = ("value", value)
        else:
            label = ("other", None)
        members.setdefault(label, []).append((reached, times))
    if not breakdown and not members:
        members[("value", None)] = []
    groups = []
    for (grp, value), rows in members.items():
        counts_k, median, avg = [], [], []
        for k in range(n):
            at = [times for reached, times in rows if reached > k]
            counts_k.append(len(at))
            gaps = [times[k] - times[k - 1] for times in at] if k else []
            median.append(statistics.median(gaps) if gaps else None)
            avg.append(statistics.fmean(gaps) if gaps else None)
        groups.append(_Group(grp, value, counts_k, median, avg))
    return _order_groups(groups, ranks)


def _funnel_span(*, from_: date, to: date, **_: Any) -> tuple[date, date]:
    return from_, to


# Only a scan: attempts need each user's events in time order, which no rollup keeps.
FUNNEL = Question("funnel", None, None, funnel_from_scan, _funnel_span)
