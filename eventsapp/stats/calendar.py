"""Local dates and day boundaries, decided by PostgreSQL alone.

Every local date the stats answer with is ``(instant AT TIME ZONE tz)::date`` as PostgreSQL computes it,
on every path: the project rollups (folded with that expression), the scans of ``events`` (filtered by
it) and the timezone-free rollups, whose day boundaries are read from PostgreSQL here. Python's zoneinfo
is never consulted: its tz data may be older or newer than the server's (America/Vancouver's permanent
-07 from 2026-11), and a name like ``CET`` is a zone with summer time to Python but a fixed-offset
abbreviation to ``AT TIME ZONE``. Names the two readings could disagree on are refused
(``timezone_problem``), so a request never gets a silently different answer.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa

UTC = timezone.utc

# Zone names PostgreSQL lists but that are not a place's rules: the server's own setting, the POSIX
# fallback, tzdata's placeholder, and the duplicate trees some systems ship.
# An abbreviation (pg_timezone_abbrevs) wins over a zone of the same name in AT TIME ZONE, so CET is read as
# a fixed +01 there while it has summer time as a zone: refused, except the names that mean UTC either way.
ACCEPTED_TIMEZONES_SQL = """
SELECT name FROM pg_timezone_names
WHERE name NOT IN ('localtime', 'posixrules', 'Factory')
  AND name NOT LIKE 'posix/%' AND name NOT LIKE 'right/%'
  AND (lower(name) NOT IN (SELECT lower(abbrev) FROM pg_timezone_abbrevs)
       OR name IN ('UTC', 'GMT', 'UCT', 'Zulu'))
"""

# Reading pg_timezone_names opens every zone file (~100 ms): once per engine (that is, per server).
_accepted: weakref.WeakKeyDictionary[sa.Engine, frozenset[str]] = weakref.WeakKeyDictionary()

# Every local date a question touches must lie in this range: its day boundaries, padded by a few days,
# stay inside what both PostgreSQL and Python's datetime can represent.
MIN_DATE = date(1900, 1, 1)
MAX_DATE = date(9999, 12, 1)


def accepted_timezones(engine: sa.Engine) -> frozenset[str]:
    """The timezone names this server accepts for ``tz`` and EVENTSAPP_TIMEZONE (cached per engine)."""
    names = _accepted.get(engine)
    if names is None:
        with engine.connect() as connection:
            names = frozenset(connection.execute(sa.text(ACCEPTED_TIMEZONES_SQL)).scalars())
        _accepted[engine] = names
    return names


def timezone_problem(engine: sa.Engine, name: str) -> str | None:
    """Why ``name`` cannot be used as a timezone on this server, or None when it can."""
    if name in accepted_timezones(engine):
        return None
    if name.upper() in {"CET", "EET", "MET", "WET", "EST", "MST", "HST"}:
        return (f"Timezone {name!r} is ambiguous: PostgreSQL reads it as a fixed-offset abbreviation. "
                "Use a region name such as Europe/Paris.")
    return f"Unknown timezone {name!r}."


# --- the calendar of a span of local dates ---------------------------------------------------------

# One row per UTC day of [lo, hi], from 15-minute samples of the local time PostgreSQL gives each instant.
# Every tz-data transition since the 1970s is at a quarter hour (UTC), so within a quarter the offset is
# constant ("steady") unless a transition falls inside it; "forward" says no local date goes back at a
# quarter's start. Steady and forward everywhere means the local date never decreases over the span: then
# a UTC day's instants are on local date `before` until `t`, on `after` from `t` on, checked at `t`.
# "clean": no local midnight falls strictly inside a quarter (whole 15-minute buckets have one date).
CALENDAR_SQL = """
WITH q AS (
    SELECT s, s AT TIME ZONE :tz AS l0,
           (s + interval '15 minutes' - interval '1 microsecond') AT TIME ZONE :tz AS l1
    FROM generate_series(CAST(:lo AS date)::timestamp AT TIME ZONE 'UTC',
                         (CAST(:hi AS date) + 1)::timestamp AT TIME ZONE 'UTC' - interval '15 minutes',
                         interval '15 minutes') AS s
), checked AS (
    SELECT s, l0, l1,
           l1 - l0 = interval '15 minutes' - interval '1 microsecond' AS steady,
           l0::date >= coalesce(lag(l1) OVER (ORDER BY s), l0)::date AS forward,
           l0::date = l1::date AS clean
    FROM q
), days AS (
    SELECT (s AT TIME ZONE 'UTC')::date AS day, min(l0::date) AS before_d, max(l1::date) AS after_d,
           bool_and(steady AND forward) AS monotone, bool_and(clean) AS clean
    FROM checked GROUP BY 1
), split AS (
    SELECT *, CASE WHEN after_d > before_d THEN after_d::timestamp AT TIME ZONE :tz
                   ELSE day::timestamp AT TIME ZONE 'UTC' END AS t
    FROM days
)
SELECT day, before_d, after_d, t,
       monotone AND after_d - before_d <= 1
           AND t >= day::timestamp AT TIME ZONE 'UTC' AND t < (day + 1)::timestamp AT TIME ZONE 'UTC'
           AND (t AT TIME ZONE :tz)::date = after_d
           AND (after_d = before_d OR ((t - interval '1 microsecond') AT TIME ZONE :tz)::date = before_d),
       clean
FROM split ORDER BY day
"""


@dataclass(frozen=True)
class UtcDaySplit:
    """How one UTC day falls on local dates: instants before ``t`` are on ``before``, the rest on ``after``.

    A UTC day with no local midnight inside it has ``t`` at its own midnight (all of it is on ``after``).
    """

    day: date
    t: datetime
    before: date
    after: date


@dataclass(frozen=True)
class Calendar:
    """The local dates [first, last] in ``tz``, as the UTC days around them fall on local dates.

    ``exact`` is False when some UTC day of the span cannot be described by one split (the local date
    goes back, or a UTC day holds three local dates): then only a scan of ``events`` is exact.
    ``clean`` is True when every local midnight is at a quarter hour, so 15-minute buckets have one date.
    """

    tz: str
    first: date
    last: date
    splits: tuple[UtcDaySplit, ...]
    exact: bool
    clean: bool

    def start_of(self, day: date) -> datetime:
        """The first instant whose local date is ``day`` or later (the span's dates ±1; needs ``exact``)."""
        for split in self.splits:
            if split.after >= day:
                return datetime.combine(split.day, time(0), tzinfo=UTC) if split.before >= day else split.t
        raise ValueError(f"{day} is outside the calendar")

    @property
    def start(self) -> datetime:
        return self.start_of(self.first)

    @property
    def end(self) -> datetime:
        return self.start_of(self.last + timedelta(days=1))

    @property
    def two_days_per_date(self) -> bool:
        """True when each local date is on at most the after side of one UTC day u and the before side of
        u + 1 (a local day under 24 h + a DST shift long never touches three UTC days)."""
        sources: dict[date, list[tuple[date, str]]] = {}
        for split in self.splits:
            if split.before != split.after:
                sources.setdefault(split.before, []).append((split.day, "before"))
            sources.setdefault(split.after, []).append((split.day, "after"))
        for day_sides in sources.values():
            if len(day_sides) > 2:
                return False
            if len(day_sides) == 2:
                (first_day, first_side), (second_day, second_side) = sorted(day_sides)
                if (first_side, second_side) != ("after", "before") or (second_day - first_day).days != 1:
                    return False
        return True

    @property
    def utc_days(self) -> tuple[date, date]:
        """The first and last UTC day of the span's splits (what the per-UTC-day rollup is read over)."""
        return self.splits[0].day, self.splits[-1].day


# A calendar depends only on the server's tz data, fixed while it runs: the last few hundred per engine are
# kept (the CALENDAR_SQL costs ~10 ms for a month, more than a rollup read).
CALENDAR_CACHE_SIZE = 512
_calendars: weakref.WeakKeyDictionary[sa.Engine, OrderedDict[tuple[str, date, date], Calendar]] = (
    weakref.WeakKeyDictionary())
_calendars_lock = threading.Lock()


def read_calendar(connection: sa.Connection, tz: str, first: date, last: date) -> Calendar:
    """Ask PostgreSQL how the UTC days around local dates [first, last] fall on local dates in ``tz``."""
    key = (tz, first, last)
    with _calendars_lock:
        cache = _calendars.setdefault(connection.engine, OrderedDict())
        if (cached := cache.get(key)) is not None:
            cache.move_to_end(key)
            return cached
    lo, hi = first - timedelta(days=2), last + timedelta(days=2)
    rows = connection.execute(sa.text(CALENDAR_SQL), {"tz": tz, "lo": lo, "hi": hi}).all()
    splits = tuple(UtcDaySplit(day, t, before, after) for day, before, after, t, _ok, _clean in rows)
    exact = all(ok for *_, ok, _clean in rows)
    clean = all(clean for *_, clean in rows)
    calendar = Calendar(tz, first, last, splits, exact, clean)
    with _calendars_lock:
        cache[key] = calendar
        if len(cache) > CALENDAR_CACHE_SIZE:
            cache.popitem(last=False)
    return calendar
