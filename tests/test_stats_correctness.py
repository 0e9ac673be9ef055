"""Every stats endpoint against an independent plain-Python computation over the same events.

The events: skewed users, timestamps written with mixed UTC offsets, both 2025 DST changes of
Europe/Kyiv, events on local midnights, duplicates, and late events that arrive after the rollups were
folded (one moves users' first-seen day earlier). Ingested in batches through ``write_events`` and
POST /events, with reads in between so the outbox is folded incrementally.
"""
from __future__ import annotations

import json
import random
import uuid
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from eventsapp.ingest import rules
from eventsapp.ingest.service import write_events

UTC = timezone.utc
TZS = ("UTC", "Europe/Kyiv", "America/New_York", "Asia/Kolkata", "Europe/London")
OFFSETS = (timedelta(0), timedelta(hours=3), timedelta(hours=-5), timedelta(hours=5, minutes=30),
           timedelta(hours=2), timedelta(hours=-8))
TYPES = ("app_open", "view_item", "purchase", "Zeta", "zeta", "login")
SEGMENTS = ((), ("event_type:purchase",), ("properties.plan=pro",), ("properties.n=3", "event_type:view_item"),
            ("properties.price=12.5",), ("properties.flag=true",))


def _stamp(instant: datetime, rng: random.Random) -> str:
    offset = rng.choice(OFFSETS)
    return instant.astimezone(timezone(offset)).isoformat(timespec="milliseconds")


def build_events(seed: int, count: int, first_day: date, days: int, users: int) -> list[dict]:
    rng = random.Random(seed)
    weights = [1 / (i + 1) ** 1.1 for i in range(users)]  # Zipf-like: a few heavy users
    events = []
    start = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
    for _ in range(count):
        user = rng.choices(range(users), weights=weights)[0]
        instant = start + timedelta(seconds=rng.randrange(days * 86400), milliseconds=rng.randrange(1000))
        events.append(_event(rng, instant, f"u{user}"))
    # Events on and just before local midnights of the timezones under test.
    for tz in TZS:
        for offset in range(0, days, 3):
            midnight = datetime.combine(first_day + timedelta(days=offset), datetime.min.time(),
                                        tzinfo=ZoneInfo(tz)).astimezone(UTC)
            events.append(_event(rng, midnight, f"edge-{tz}"))
            events.append(_event(rng, midnight - timedelta(milliseconds=1), f"edge-{tz}-before"))
    return events


def _event(rng: random.Random, instant: datetime, user: str) -> dict:
    properties: dict = {"plan": rng.choice(["pro", "free", "Pro"]), "n": rng.randrange(5)}
    if rng.random() < 0.3:
        properties["price"] = rng.choice([12.5, 3, 7.25, "12.5"])
    if rng.random() < 0.2:
        properties["flag"] = rng.choice([True, False, "true"])
    return {"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "occurred_at": _stamp(instant, rng),
            "user_id": user, "event_type": rng.choice(TYPES), "properties": properties}


# --- the independent computation ------------------------------------------------------------------


class Oracle:
    def __init__(self, events: list[dict]) -> None:
        unique: dict[str, dict] = {}
        for event in events:
            unique.setdefault(event["event_id"], event)
        self.events = [dict(e, ts=datetime.fromisoformat(e["occurred_at"])) for e in unique.values()]

    @staticmethod
    def _text(value) -> str | None:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return json.dumps(value)
        return value if isinstance(value, str) else None

    def matching(self, segments) -> list[dict]:
        out = []
        for event in self.events:
            ok = True
            for segment in segments:
                if segment.startswith("event_type:"):
                    ok &= event["event_type"] == segment.split(":", 1)[1]
                else:
                    key, value = segment[len("properties."):].split("=", 1)
                    ok &= self._text(event["properties"].get(key)) == value
            if ok:
                out.append(event)
        return out

    @staticmethod
    def local(event: dict, tz: str) -> date:
        return event["ts"].astimezone(ZoneInfo(tz)).date()

    def dau(self, first: date, last: date, tz: str, segments) -> list[dict]:
        users = defaultdict(set)
        for event in self.matching(segments):
            users[self.local(event, tz)].add(event["user_id"])
        return [{"date": (first + timedelta(days=i)).isoformat(), "dau": len(users[first + timedelta(days=i)])}
                for i in range((last - first).days + 1)]

    def top(self, first: date, last: date, tz: str, segments, limit: int) -> list[dict]:
        counts = Counter(e["event_type"] for e in self.matching(segments) if first <= self.local(e, tz) <= last)
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0].encode("utf-8")))
        return [{"event_type": name, "count": n} for name, n in ordered[:limit]]

    def summary(self, first: date, last: date, tz: str, segments) -> dict:
        dates = [self.local(e, tz) for e in self.events]
        chosen = [e for e in self.matching(segments) if first <= self.local(e, tz) <= last]
        return {"data_first_date": min(dates).isoformat() if dates else None,
                "data_last_date": max(dates).isoformat() if dates else None,
                "events": len(chosen), "users": len({e["user_id"] for e in chosen})}

    def retention(self, start: date, windows: int, size: str, cohort: str, cohorts: int, tz: str,
                  segments) -> list[dict]:
        step = 7 if size == "weekly" else 1
        spans = cohorts + windows - 1
        first_date: dict[str, date] = {}
        active = defaultdict(set)
        for event in self.matching(segments):
            day = self.local(event, tz)
            user = event["user_id"]
            first_date[user] = min(first_date.get(user, day), day)
            offset = (day - start).days
            if 0 <= offset < spans * step:
                active[user].add(offset // step)
        members = defaultdict(set)
        if cohort == "first_seen":
            for user, day in first_date.items():
                offset = (day - start).days
                if 0 <= offset < cohorts * step:
                    members[offset // step].add(user)
        else:
            for user, gs in active.items():
                for g in gs:
                    if g < cohorts:
                        members[g].add(user)
        rows = []
        for c in range(cohorts):
            row = {"cohort_start_date": (start + timedelta(days=c * step)).isoformat(), "size": len(members[c])}
            for k in range(windows):
                hits = sum(1 for user in members[c] if c + k in active[user])
                row[f"w{k}"] = round(hits / len(members[c]), 4) if members[c] else 0.0
            rows.append(row)
        return rows


# --- ingestion ------------------------------------------------------------------------------------


def store(engine, events: list[dict]) -> None:
    rows, errors = rules.validate_events(events)
    assert not errors
    with engine.begin() as connection:
        write_events(connection, rows)


@pytest.fixture
def dataset(engine, client):
    """Ingest in several steps with reads (folds) in between; return the Oracle over everything sent."""
    main = build_events(seed=7, count=2500, first_day=date(2025, 10, 18), days=18, users=60)
    spring = build_events(seed=8, count=300, first_day=date(2025, 3, 27), days=6, users=15)
    rng = random.Random(9)
    # Late events: weeks before the main data, some for users already seen (their first-seen moves earlier).
    late = [_event(rng, datetime(2025, 10, 2, 21, 30, tzinfo=UTC) + timedelta(hours=i * 7), f"u{i % 12}")
            for i in range(40)]
    duplicates = rng.sample(main, 150)
    shuffled = main[:]
    rng.shuffle(shuffled)  # out of order
    sent: list[dict] = []
    for batch in (shuffled[:1200], spring, shuffled[1200:] + duplicates[:50]):
        store(engine, batch)
        sent += batch
        assert client.get("/stats/dau?from=2025-10-20&to=2025-10-21").status_code == 200  # fold
    response = client.post("/events", json=late + duplicates[50:])
    assert response.status_code == 200, response.get_json()
    sent += late + duplicates[50:]
    oracle = Oracle(sent)
    assert len(oracle.events) == len(main) + len(spring) + len(late)
    return oracle


@pytest.fixture(params=["UTC", "Europe/Kyiv"])
def project_tz(request, app, dataset, monkeypatch):
    """Run under two project timezones, switched as an operator does (`flask rollups set-timezone`, which
    rebuilds the local rollups; the database's timezone, not EVENTSAPP_TIMEZONE, decides)."""
    monkeypatch.setitem(app.config, "EVENTSAPP_TIMEZONE", request.param)
    result = app.test_cli_runner().invoke(args=["rollups", "set-timezone", request.param])
    assert result.exit_code == 0, result.output
    return request.param


RANGES = ((date(2025, 10, 18), date(2025, 11, 5)), (date(2025, 10, 25), date(2025, 10, 27)),
          (date(2025, 3, 29), date(2025, 3, 31)), (date(2025, 9, 1), date(2025, 11, 30)))


def _query(segments, **params) -> str:
    pairs = [f"{k}={v}" for k, v in params.items() if v is not None]
    pairs += [f"segment={s}" for s in segments]
    return "&".join(pairs)


def test_dau_top_events_and_summary_match_python(client, dataset, project_tz):
    for tz in (None,) + TZS:
        effective = tz or project_tz
        for first, last in RANGES:
            for segments in SEGMENTS:
                q = _query(segments, **{"from": first, "to": last, "tz": tz})
                got = client.get(f"/stats/dau?{q}")
                assert got.status_code == 200, got.get_json()
                assert got.get_json() == dataset.dau(first, last, effective, segments), (q, project_tz)
                for limit in (10, 2):
                    got = client.get(f"/stats/top-events?{q}&limit={limit}").get_json()
                    assert got == dataset.top(first, last, effective, segments, limit), (q, project_tz)
                got = client.get(f"/stats/summary?{q}").get_json()
                assert got == dataset.summary(first, last, effective, segments), (q, project_tz)


RETENTION_CASES = (
    (date(2025, 10, 20), 7, "daily", 1), (date(2025, 10, 22), 3, "daily", 4), (date(2025, 10, 18), 3, "weekly", 2),
    (date(2025, 3, 28), 4, "daily", 2), (date(2025, 10, 1), 4, "weekly", 3),
)


def test_retention_matches_python(client, dataset, project_tz):
    for tz in (None,) + TZS:
        effective = tz or project_tz
        for start, windows, size, cohorts in RETENTION_CASES:
            for cohort in ("first_seen", "active"):
                for segments in SEGMENTS[:4]:
                    q = _query(segments, start_date=start, windows=windows, window_size=size, cohort=cohort,
                               cohorts=cohorts, tz=tz)
                    got = client.get(f"/stats/retention?{q}")
                    assert got.status_code == 200, got.get_json()
                    expected = dataset.retention(start, windows, size, cohort, cohorts, effective, segments)
                    assert got.get_json() == expected, (q, project_tz)


def test_the_dataset_exercises_what_it_claims(dataset):
    """Guard the test data itself: skew, the Kyiv DST days, late first-seen moves and mixed offsets."""
    per_user = Counter(e["user_id"] for e in dataset.events)
    assert per_user.most_common(1)[0][1] > 10 * sorted(per_user.values())[len(per_user) // 2]
    kyiv_days = {Oracle.local(e, "Europe/Kyiv") for e in dataset.events}
    assert {date(2025, 10, 26), date(2025, 3, 30)} <= kyiv_days
    assert len({e["occurred_at"][-6:] for e in dataset.events}) >= 5
    late_users = {e["user_id"] for e in dataset.events if e["ts"] < datetime(2025, 10, 10, tzinfo=UTC)}
    assert late_users & {e["user_id"] for e in dataset.events if e["ts"] > datetime(2025, 10, 18, tzinfo=UTC)}
