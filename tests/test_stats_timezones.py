"""One local date per event, on every path: project rollups, timezone-free rollups and scans agree.

Events sit on local midnights and tz-data transitions (found by asking PostgreSQL, whose tz data may differ
from Python's), ±1 ms. The expectation is each event's ``(occurred_at AT TIME ZONE tz)::date`` read
straight from the table, counted in plain Python; every variant of every question must give it.
"""
from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from eventsapp.ingest import rules
from eventsapp.ingest.service import write_events
from eventsapp.stats import queries
from eventsapp.stats.calendar import read_calendar

ZONES = ("America/Vancouver", "Europe/Kyiv", "Asia/Kolkata", "America/St_Johns", "Australia/Lord_Howe",
         "America/Santiago", "Asia/Kathmandu", "UTC")
RANGES = ((date(2025, 3, 1), date(2025, 12, 31)), (date(2026, 1, 1), date(2026, 11, 30)))
KINDS = ("project_rollup", "utc_day_rollup", "scan")

# Offset changes of a zone in 2025-2026 (all at quarter hours), as PostgreSQL sees them.
TRANSITIONS_SQL = """
WITH s AS (
    SELECT t, (t AT TIME ZONE :tz) - (t AT TIME ZONE 'UTC') AS off
    FROM generate_series(timestamptz '2025-01-01 00:00Z', timestamptz '2026-12-31 00:00Z', interval '15 minutes') t
)
SELECT t FROM (SELECT t, off, lag(off) OVER (ORDER BY t) AS prev FROM s) x WHERE off <> prev
"""
MIDNIGHTS_SQL = """SELECT (d::date::timestamp AT TIME ZONE :tz)
                   FROM generate_series(CAST(:first AS date), CAST(:last AS date), interval '1 day') d"""


def _instants(connection: sa.Connection, tz: str) -> list:
    transitions = connection.execute(sa.text(TRANSITIONS_SQL), {"tz": tz}).scalars().all()
    days = {date(2025, 3, 2), date(2025, 12, 30), date(2026, 1, 1), date(2026, 11, 14), date(2026, 11, 15)}
    for t in transitions:
        days |= {t.date() + timedelta(days=i) for i in (-1, 0, 1)}
    midnights = [connection.execute(sa.text(MIDNIGHTS_SQL), {"tz": tz, "first": d, "last": d}).scalar_one()
                 for d in sorted(days)]
    ms, half_hour = timedelta(milliseconds=1), timedelta(minutes=30)
    return sorted({m + delta for m in transitions + midnights for delta in (-half_hour, -ms, timedelta(0), ms, half_hour)})


@pytest.fixture
def edge_events(engine):
    """Events on every zone's midnights and transitions; users: one per event, plus one per pair of
    neighbouring instants (so a user straddles each boundary). Returns nothing; expectations come from PG."""
    events = []
    with engine.connect() as connection:
        instants = sorted({i for tz in ZONES for i in _instants(connection, tz)})
    # The two cases of issue 18: CET's summer evening, and Vancouver after PG's tz data made -07 permanent.
    instants += [datetime.fromisoformat(s) for s in ("2025-07-01T22:30:00+00:00", "2026-11-15T07:30:00+00:00")]
    for i, instant in enumerate(instants):
        for user in (f"one-{i}", f"pair-{i // 2}"):
            events.append({"event_id": str(uuid.uuid4()), "occurred_at": instant.isoformat(), "user_id": user,
                           "event_type": ("a", "b", "c")[i % 3], "properties": {"p": str(i % 2)}})
    rows, errors = rules.validate_events(events)
    assert not errors
    with engine.begin() as connection:
        write_events(connection, rows)


def _local_dates(engine, tz: str) -> list[tuple[date, str, str, str]]:
    """(local date, user, event_type, p) of every stored event, as PostgreSQL dates it."""
    with engine.connect() as connection:
        return connection.execute(sa.text(
            "SELECT (occurred_at AT TIME ZONE :tz)::date, user_id, event_type, properties ->> 'p' FROM events"),
            {"tz": tz}).all()


def _ask(engine, question, kind: str, tz: str, project_tz: str, **arguments):
    def asked(connection, scope, **args):
        return question(connection, scope, kind=kind, **args)
    return queries.run_read(engine, asked, project_tz=project_tz, timeout_ms=60_000, tz=tz, **arguments)


@pytest.mark.slow
@pytest.mark.parametrize("tz", ZONES)
def test_every_path_gives_each_event_the_same_local_date(engine, edge_events, tz):
    dated = _local_dates(engine, tz)
    for first, last in RANGES:
        users: dict[date, set] = defaultdict(set)
        types: Counter = Counter()
        for day, user, event_type, _ in dated:
            if first <= day <= last:
                users[day].add(user)
                types[event_type] += 1
        expected_dau = [{"date": first + timedelta(days=i), "dau": len(users[first + timedelta(days=i)])}
                        for i in range((last - first).days + 1)]
        expected_top = sorted(({"event_type": t, "count": n} for t, n in types.items()),
                              key=lambda row: (-row["count"], row["event_type"]))
        in_range = {user for day, user, *_ in dated if first <= day <= last}
        with engine.connect() as connection:
            assert read_calendar(connection, tz, first, last).exact, "every zone here is exact for the rollups"
        for kind in KINDS:
            project_tz = tz if kind == "project_rollup" else "UTC"
            span = {"from_": first, "to": last}
            assert _ask(engine, queries.daily_active_users, kind, tz, project_tz, **span) == expected_dau, kind
            assert _ask(engine, queries.top_events, kind, tz, project_tz, **span) == expected_top, kind
            got = _ask(engine, queries.summary, kind, tz, project_tz, **span)
            assert (got["events"], got["users"]) == (sum(types.values()), len(in_range)), kind


@pytest.mark.slow
@pytest.mark.parametrize("tz", ("America/Vancouver", "Australia/Lord_Howe", "America/St_Johns"))
def test_every_retention_path_agrees_with_the_local_dates(engine, edge_events, tz):
    start, windows, cohorts = date(2025, 3, 3), 4, 40
    dated = _local_dates(engine, tz)
    first_seen: dict[str, date] = {}
    active: dict[str, set] = defaultdict(set)
    for day, user, *_ in dated:
        first_seen[user] = min(first_seen.get(user, day), day)
        if 0 <= (day - start).days < (cohorts + windows - 1) * 7:
            active[user].add((day - start).days // 7)
    for cohort in ("first_seen", "active"):
        members: dict[int, set] = defaultdict(set)
        for user in first_seen:
            if cohort == "first_seen":
                offset = (first_seen[user] - start).days
                if 0 <= offset < cohorts * 7:
                    members[offset // 7].add(user)
            else:
                for g in active[user]:
                    if g < cohorts:
                        members[g].add(user)
        expected = []
        for c in range(cohorts):
            row = {"cohort_start_date": start + timedelta(days=7 * c), "size": len(members[c])}
            for k in range(windows):
                hits = sum(1 for user in members[c] if c + k in active[user])
                row[f"w{k}"] = round(hits / len(members[c]), 4) if members[c] else 0.0
            expected.append(row)
        for kind in KINDS:
            project_tz = tz if kind == "project_rollup" else "UTC"
            got = _ask(engine, queries.retention, kind, tz, project_tz, start_date=start, windows=windows,
                       window_size="weekly", cohort=cohort, cohorts=cohorts)
            assert got == expected, (kind, cohort)


@pytest.mark.parametrize("instant", ["2025-07-01T22:30:00Z", "2026-11-15T07:30:00Z"])
@pytest.mark.parametrize("tz", ["Europe/Paris", "America/Vancouver"])
def test_an_event_counts_on_one_day_whatever_the_endpoint_or_segment(client, engine, instant, tz):
    """Issue 18.1 over HTTP: unsegmented, segmented and single-day summaries put the event on one day."""
    assert client.post("/events", json=[{"event_id": str(uuid.uuid4()), "occurred_at": instant, "user_id": "c",
                                         "event_type": "ctest"}]).status_code == 201
    (day,) = [d for d, *_ in _local_dates(engine, tz)]
    first, last = day - timedelta(days=1), day + timedelta(days=1)
    expected = [{"date": (first + timedelta(days=i)).isoformat(), "dau": int(first + timedelta(days=i) == day)}
                for i in range(3)]
    base = f"from={first}&to={last}&tz={tz}"
    assert client.get(f"/stats/dau?{base}").get_json() == expected
    assert client.get(f"/stats/dau?{base}&segment=event_type:ctest").get_json() == expected
    for i in range(3):
        one = first + timedelta(days=i)
        for segment in ("", "&segment=event_type:ctest"):
            got = client.get(f"/stats/summary?from={one}&to={one}&tz={tz}{segment}").get_json()
            assert got["events"] == int(one == day), (one, segment)


@pytest.mark.parametrize("name", ["CET", "EET", "MET", "WET", "localtime", "posixrules", "Mars/Base", "UTC+3",
                                  "<+03>-3", "EST5EDT,M3.2.0,M11.1.0", "europe/kyiv", "posix/Europe/Kyiv"])
def test_a_timezone_postgresql_could_misread_is_a_400_naming_tz(client, name):
    for url in (f"/stats/dau?from=2025-07-01&to=2025-07-02&tz={quote(name)}",
                f"/stats/dau?from=2025-07-01&to=2025-07-02&segment=event_type:x&tz={quote(name)}",
                f"/stats/retention?start_date=2025-07-01&tz={quote(name)}",
                f"/stats/summary?from=2025-07-01&to=2025-07-02&tz={quote(name)}"):
        response = client.get(url)
        assert response.status_code == 400, (url, response.get_json())
        body = response.get_json()
        assert "tz" in body["message"] and body["errors"]["query"]["tz"], body


def test_the_timezone_list_is_what_tz_accepts(client):
    body = client.get("/stats/timezones").get_json()
    names = body["timezones"]
    assert body["project_timezone"] == "UTC"
    assert {"UTC", "Europe/Kyiv", "America/Vancouver", "Australia/Lord_Howe"} <= set(names)
    assert not {"CET", "EET", "MET", "WET", "localtime", "posixrules"} & set(names)
    assert names == sorted(names)
    for name in names[:: max(1, len(names) // 25)]:
        assert client.get(f"/stats/summary?from=2025-07-01&to=2025-07-02&tz={quote(name)}").status_code == 200, name
