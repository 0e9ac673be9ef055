"""/stats/trends, /stats/stickiness and /stats/lifecycle against an independent plain-Python computation
over the same events (zoneinfo for local times, Python's sort for ranks, linear interpolation by hand).

The events: skewed users over September–November 2025 and March 2025 (both DST changes of Europe/Kyiv
and America/New_York, with events inside the repeated and next to the skipped hours), events on local
midnights, a literal ``$other`` event type and property value, empty/null/missing properties, numbers
given as JSON strings and booleans (not numbers: left out), twin events that tie two breakdown values on
every measure, late events sent after the rollups were folded (some move users' first-ever day earlier),
and duplicates.
"""
from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

UTC = timezone.utc
TYPES = ("app_open", "view_item", "purchase", "$other", "Zeta", "zeta")
PLATFORMS = ("ios", "android", "web", "$other", "", None, "MISSING")
MEASURES = ("events", "users", "wau", "mau", "sum", "avg", "min", "max", "median", "p90", "p95", "p99",
            "per_user_avg")
PROPERTY_MEASURES = ("sum", "avg", "min", "max", "median", "p90", "p95", "p99")
WINDOWS = {"wau": 7, "mau": 30}
PERCENTILES = {"median": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
TZS = ("UTC", "Europe/Kyiv", "America/New_York")


# --- the events ----------------------------------------------------------------------------------------


def _event(rng: random.Random, instant: datetime, user: str, **override) -> dict:
    properties: dict = {}
    platform = rng.choice(PLATFORMS)
    if platform != "MISSING":
        properties["platform"] = platform
    roll = rng.random()
    if roll < 0.55:
        properties["price"] = rng.choice([rng.randrange(1, 400) / 4, rng.randrange(1, 50)])
    elif roll < 0.65:
        properties["price"] = rng.choice(["12.5", "7"])  # numbers as JSON strings: not numbers
    elif roll < 0.7:
        properties["price"] = True
    properties["plan"] = rng.choice([1, True, "pro", "true", 2.5, False])
    offset = timedelta(minutes=rng.choice([0, 180, -300, 330, 120]))
    event = {"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
             "occurred_at": instant.astimezone(timezone(offset)).isoformat(timespec="milliseconds"),
             "user_id": user, "event_type": rng.choice(TYPES), "properties": properties}
    event.update(override)
    return event


def _span(rng, weights, count, first: date, days: int, prefix: str = "u") -> list[dict]:
    start = datetime.combine(first, time(0), tzinfo=UTC)
    out = []
    for _ in range(count):
        user = rng.choices(range(len(weights)), weights=weights)[0]
        instant = start + timedelta(seconds=rng.randrange(days * 86400), milliseconds=rng.randrange(1000))
        out.append(_event(rng, instant, f"{prefix}{user}"))
    return out


def build_events(seed: int = 11) -> tuple[list[dict], list[dict], list[dict]]:
    """(first batch, late events, duplicates): late ones are sent after reads have folded the first."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) ** 1.1 for i in range(45)]
    main = _span(rng, weights, 1500, date(2025, 10, 8), 32)
    main += _span(rng, weights, 250, date(2025, 3, 6), 28)
    # Inside the repeated hours (Kyiv 2025-10-26 00:00-02:00Z, New York 2025-11-02 05:00-07:00Z) and next to
    # the skipped ones (Kyiv 2025-03-30 01:00Z, New York 2025-03-09 07:00Z).
    for anchor in (datetime(2025, 10, 26, 0, tzinfo=UTC), datetime(2025, 11, 2, 5, tzinfo=UTC),
                   datetime(2025, 3, 30, 0, tzinfo=UTC), datetime(2025, 3, 9, 6, tzinfo=UTC)):
        for minutes in range(0, 120, 9):
            main.append(_event(rng, anchor + timedelta(minutes=minutes), f"u{minutes % 7}"))
    # On and just before local midnights.
    for tz in TZS:
        for offset in range(0, 32, 3):
            midnight = datetime.combine(date(2025, 10, 8) + timedelta(days=offset), time(0),
                                        tzinfo=ZoneInfo(tz)).astimezone(UTC)
            main.append(_event(rng, midnight, f"edge-{tz}"))
            main.append(_event(rng, midnight - timedelta(milliseconds=1), f"edge-{tz}-before"))
    # Twins: the same event twice, tier "b" and "B": the two values tie on every measure ("B" < "b" by code
    # point), and "c" ranks below them.
    for original in rng.sample(main, 60):
        for tier in ("b", "B"):
            main.append(dict(original, event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                             properties={**original["properties"], "tier": tier}))
    for original in rng.sample(main, 20):
        main.append(dict(original, event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                         properties={**original["properties"], "tier": "c"}))
    # Late: September (the look-back of the first WAU/MAU points) and early October for known users.
    late = _span(rng, weights[:20], 200, date(2025, 9, 10), 26)
    duplicates = rng.sample(main, 80)
    return main, late, duplicates


# --- the independent computation --------------------------------------------------------------------------


def _text(value) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return value or None  # "" and None: the none group


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _percentile(values: list[float], p: float):
    if not values:
        return None
    ordered = sorted(values)
    position = p * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measure_of(measure: str, events: list[dict], prop: str | None):
    if measure == "events":
        return len(events)
    if measure == "users":
        return len({e["user_id"] for e in events})
    if measure == "per_user_avg":
        users = len({e["user_id"] for e in events})
        return len(events) / users if users else None
    xs = [e["properties"][prop] for e in events]
    if measure == "sum":
        return sum(xs)
    if not xs:
        return None
    if measure == "avg":
        return sum(xs) / len(xs)
    if measure in ("min", "max"):
        return min(xs) if measure == "min" else max(xs)
    return _percentile([float(x) for x in xs], PERCENTILES[measure])


class Oracle:
    def __init__(self, sent: list[dict]) -> None:
        unique: dict[str, dict] = {}
        for event in sent:
            unique.setdefault(event["event_id"], event)
        self.events = [dict(e, ts=datetime.fromisoformat(e["occurred_at"])) for e in unique.values()]

    def matching(self, segments) -> list[dict]:
        out = []
        for event in self.events:
            ok = True
            for segment in segments:
                if segment.startswith("event_type:"):
                    ok &= event["event_type"] == segment.split(":", 1)[1]
                else:
                    key, value = segment[len("properties."):].split("=", 1)
                    ok &= _text(event["properties"].get(key)) == value
            if ok:
                out.append(event)
        return out

    @staticmethod
    def day(event: dict, tz: str) -> date:
        return event["ts"].astimezone(ZoneInfo(tz)).date()

    @staticmethod
    def bucket_of_day(day: date, interval: str) -> date:
        if interval == "week":
            return day - timedelta(days=day.weekday())
        if interval == "month":
            return day.replace(day=1)
        return day

    @staticmethod
    def bucket(event: dict, tz: str, interval: str):
        local = event["ts"].astimezone(ZoneInfo(tz))
        if interval == "hour":  # keeps `fold`, so a repeated hour maps back to its own instant
            return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return Oracle.bucket_of_day(local.date(), interval)

    @staticmethod
    def buckets(tz: str, interval: str, first: date, last: date) -> list[tuple]:
        """(key, label, local day) of each bucket."""
        zone = ZoneInfo(tz)
        if interval == "hour":
            at = datetime.combine(first, time(0), tzinfo=zone).astimezone(UTC)
            end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
            out = []
            while at < end:
                local = at.astimezone(zone)
                out.append((at, local.isoformat(), local.date()))
                at += timedelta(hours=1)
            return out
        out, b = [], Oracle.bucket_of_day(first, interval)
        while b <= last:
            out.append((b, b.isoformat(), b))
            b = b + timedelta(days=1) if interval == "day" else (
                b + timedelta(days=7) if interval == "week" else (b + timedelta(days=32)).replace(day=1))
        return out

    def trends(self, first: date, last: date, tz: str, segments=(), measure="events", prop=None, interval="day",
               breakdown=None, limit=25, compare=False) -> list[dict]:
        days = (last - first).days + 1
        pfirst = first - timedelta(days=days) if compare else first
        window = WINDOWS.get(measure, 1)
        events = self.matching(segments)
        if prop is not None:
            events = [dict(e, properties={**e["properties"], prop: _number(e["properties"].get(prop))})
                      for e in events if _number(e["properties"].get(prop)) is not None]
        for e in events:
            e["d"] = self.day(e, tz)
            if breakdown is None:
                e["v"] = None
            elif breakdown == "event_type":
                e["v"] = e["event_type"]
            else:
                e["v"] = _text(e["properties"].get(breakdown[len("properties."):]))
        in_range = [e for e in events if first <= e["d"] <= last]
        ranked: list[str] = []
        if breakdown is not None:
            per_value = defaultdict(list)
            for e in in_range:
                if e["v"] is not None:
                    per_value[e["v"]].append(e)
            rank_measure = "users" if measure in ("wau", "mau", "per_user_avg") else measure
            scored = [(measure_of(rank_measure, es, prop), v) for v, es in per_value.items()]
            scored.sort(key=lambda item: (-item[0], item[1].encode("utf-8")))
            ranked = [v for _, v in scored[:limit]]
        top = set(ranked)

        def group(e) -> tuple:
            if breakdown is None:
                return ("value", None)
            if e["v"] is None:
                return ("none", None)
            return ("value", e["v"]) if e["v"] in top else ("other", None)

        current = self.buckets(tz, interval, first, last)
        previous = self.buckets(tz, interval, pfirst, first - timedelta(days=1)) if compare else []
        empty = 0 if measure in ("events", "users", "wau", "mau", "sum") else None

        # One pass: the events of each (series, range, bucket), and each series' users per local day.
        cells = defaultdict(list)
        daily = defaultdict(lambda: defaultdict(set))
        for e in events:
            s = group(e)
            daily[s][e["d"]].add(e["user_id"])
            r = 0 if first <= e["d"] <= last else (1 if pfirst <= e["d"] < first else None)
            if r is not None:
                cells[(s, r, self.bucket(e, tz, interval))].append(e)

        def value(series, b, previous_range: bool):
            key, _, bday = b
            if measure in WINDOWS:
                users = set()
                for k in range(window):
                    users |= daily[series].get(bday - timedelta(days=k), set())
                return len(users)
            chosen = cells.get((series, 1 if previous_range else 0, key))
            return measure_of(measure, chosen, prop) if chosen else empty

        series = [("value", v) for v in ranked] if breakdown else [("value", None)]
        if breakdown:
            for extra in (("other", None), ("none", None)):
                if measure in WINDOWS:
                    present = any(value(extra, b, False) for b in current + previous)
                else:
                    present = any(key[0] == extra for key in cells)
                if present:
                    series.append(extra)
        rows = []
        for s in series:
            for i, b in enumerate(current):
                row = {"bucket": b[1], "breakdown": s[1], "group": s[0], "value": value(s, b, False)}
                if compare:
                    p = previous[i] if i < len(previous) else None
                    row["previous_bucket"] = p[1] if p else None
                    row["previous_value"] = value(s, p, True) if p else empty
                rows.append(row)
        return rows

    def stickiness(self, first: date, last: date, tz: str, segments, interval: str) -> list[dict]:
        active = defaultdict(set)
        for e in self.matching(segments):
            d = self.day(e, tz)
            if first <= d <= last:
                active[e["user_id"]].add(self.bucket_of_day(d, interval))
        count = len(self.buckets(tz, interval, first, last))
        return [{"intervals": n, "users": sum(1 for bs in active.values() if len(bs) == n)}
                for n in range(1, count + 1)]

    def lifecycle(self, first: date, last: date, tz: str, segments, interval: str) -> list[dict]:
        current = [b[0] for b in self.buckets(tz, interval, first, last)]
        before = self.buckets(tz, interval, current[0] - timedelta(days=1), current[0] - timedelta(days=1))[0][0]
        first_bucket: dict[str, date] = {}
        active = defaultdict(set)
        for e in self.matching(segments):
            d = self.day(e, tz)
            b = self.bucket_of_day(d, interval)
            user = e["user_id"]
            first_bucket[user] = min(first_bucket.get(user, b), b)
            if first <= d <= last or b == before:
                active[b].add(user)
        rows, previous = [], before
        for b in current:
            now, then = active[b], active[previous]
            new = {u for u in now if first_bucket[u] == b}
            rows.append({"bucket": b.isoformat(), "new": len(new), "returning": len((now - new) & then),
                         "resurrecting": len(now - new - then), "dormant": -len(then - now)})
            previous = b
        return rows


def assert_rows_equal(got: list[dict], expected: list[dict], context) -> None:
    assert len(got) == len(expected), (context, got[:3], expected[:3])
    for g, e in zip(got, expected):
        assert g.keys() == e.keys(), (context, g, e)
        for key in g:
            if isinstance(e[key], float) or isinstance(g[key], float):
                assert g[key] == pytest.approx(e[key], rel=1e-9, abs=1e-9), (context, g, e)
            else:
                assert g[key] == e[key], (context, g, e)


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def dataset(client):
    """Send the events in steps with reads (rollup folds) in between; return the Oracle over all sent."""
    main, late, duplicates = build_events()
    rng = random.Random(3)
    shuffled = main[:]
    rng.shuffle(shuffled)
    sent: list[dict] = []
    for batch in (shuffled[:1000], shuffled[1000:] + duplicates[:40], late + duplicates[40:]):
        response = client.post("/events", json=batch)
        assert response.status_code in (200, 201), response.get_json()
        sent += batch
        assert client.get("/stats/trends?from=2025-10-20&to=2025-10-21").status_code == 200  # folds
    return Oracle(sent)


@pytest.fixture(params=["UTC", "Europe/Kyiv"])
def project_tz(request, app, dataset, monkeypatch):
    """Two project timezones, switched as an operator does (`flask rollups set-timezone` rebuilds the local
    rollups; the database's timezone decides): the rollups answer for that one."""
    monkeypatch.setitem(app.config, "EVENTSAPP_TIMEZONE", request.param)
    result = app.test_cli_runner().invoke(args=["rollups", "set-timezone", request.param])
    assert result.exit_code == 0, result.output
    return request.param


def _url(path: str, segments=(), **params) -> str:
    pairs = [f"{k}={v}" for k, v in params.items() if v is not None]
    pairs += [f"segment={s}" for s in segments]
    return f"/stats/{path}?" + "&".join(pairs)


RANGE = (date(2025, 10, 22), date(2025, 11, 4))  # Wednesday to Tuesday, both autumn DST changes
HOUR_RANGE = (date(2025, 10, 25), date(2025, 11, 3))


def _check_trends(client, oracle, tz, effective, measure, interval, breakdown, segments=(), limit=None,
                  compare=False, span=None):
    first, last = span or (HOUR_RANGE if interval == "hour" else RANGE)
    prop = "price" if measure in PROPERTY_MEASURES else None
    url = _url("trends", segments, **{"from": first, "to": last, "tz": tz, "measure": measure, "property": prop,
                                      "interval": interval, "breakdown": breakdown, "limit": limit,
                                      "compare": "previous" if compare else None})
    response = client.get(url)
    assert response.status_code == 200, (url, response.get_json())
    expected = oracle.trends(first, last, effective, segments, measure, prop, interval, breakdown,
                             limit or 25, compare)
    assert_rows_equal(response.get_json(), expected, url)
    return expected


# --- tests ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_measure_interval_and_breakdown_matches_python(client, dataset, project_tz):
    for tz in (None,) + tuple(t for t in TZS if t != project_tz):
        effective = tz or project_tz
        for m, measure in enumerate(MEASURES):
            for interval in ("hour", "day", "week", "month"):
                if measure in WINDOWS and interval in ("week", "month"):
                    continue
                for b, (breakdown, limit) in enumerate(((None, None), ("event_type", 3),
                                                        ("properties.platform", 2))):
                    _check_trends(client, dataset, tz, effective, measure, interval, breakdown, limit=limit,
                                  compare=(m + b) % 2 == 0)


def test_segments_and_spring_dst_match_python(client, dataset):
    spring = (date(2025, 3, 8), date(2025, 3, 31))
    for segments in ((), ("event_type:purchase",), ("properties.platform=ios", "properties.plan=true")):
        for tz in TZS:
            for measure in ("events", "users", "mau", "avg", "p95", "per_user_avg"):
                for interval in ("hour", "day", "week"):
                    if measure in WINDOWS and interval == "week":
                        continue
                    span = (date(2025, 3, 29), date(2025, 3, 31)) if interval == "hour" else spring
                    _check_trends(client, dataset, tz, tz, measure, interval, "properties.platform", segments,
                                  limit=2, compare=True, span=span)


def test_ties_at_the_limit_other_none_and_literal_group_names(client, dataset):
    """"B" and "b" tie on every measure: "B" wins by code point; a literal "$other" stays a value."""
    for measure in ("events", "users", "wau", "sum", "median", "max", "per_user_avg"):
        rows = _check_trends(client, dataset, None, "UTC", measure, "day", "properties.tier", limit=1)
        assert {(r["group"], r["breakdown"]) for r in rows} == {("value", "B"), ("other", None), ("none", None)}
        rows = _check_trends(client, dataset, None, "UTC", measure, "day", "properties.tier", limit=2)
        assert [r["breakdown"] for r in rows if r["group"] == "value"][:1] == ["B"]
        assert ("value", "b") in {(r["group"], r["breakdown"]) for r in rows}
    rows = _check_trends(client, dataset, "Europe/Kyiv", "Europe/Kyiv", "events", "day", "properties.platform",
                         limit=100)
    assert ("value", "$other") in {(r["group"], r["breakdown"]) for r in rows}
    assert rows[-1]["group"] == "none" and ("other", None) not in {(r["group"], r["breakdown"]) for r in rows}
    rows = _check_trends(client, dataset, "UTC", "UTC", "users", "week", "event_type", limit=100)
    assert "$other" in {r["breakdown"] for r in rows if r["group"] == "value"}


def test_breakdowns_with_every_value_ranked_match_python(client, dataset):
    """With a limit above the number of values there is no `other` group: users, the property measures and
    those folded from per-value aggregates (events, sum, min, max) read the rows once; compare may add
    values seen only in the previous range (then `other` again)."""
    for measure in ("users", "events", "sum", "min", "max", "avg", "median", "p90"):
        for breakdown in ("event_type", "properties.platform"):
            for interval, compare in (("day", False), ("week", True), ("hour", False)):
                _check_trends(client, dataset, None, "UTC", measure, interval, breakdown, limit=100, compare=compare)


def test_numbers_given_as_strings_are_left_out(client):
    events = [{"event_id": str(uuid.uuid4()), "occurred_at": "2025-10-01T10:00:00Z", "user_id": "a",
               "event_type": "buy", "properties": {"price": price}}
              for price in ("12.5", True, None, {"x": 1}, 4, 6)]
    assert client.post("/events", json=events).status_code == 201
    url = "/stats/trends?from=2025-10-01&to=2025-10-02&property=price&measure="
    assert [r["value"] for r in client.get(url + "sum").get_json()] == [10, 0]
    assert [r["value"] for r in client.get(url + "avg").get_json()] == [5, None]
    assert [r["value"] for r in client.get(url + "median").get_json()] == [5.0, None]
    assert [r["value"] for r in client.get(url + "p90").get_json()] == [pytest.approx(5.8), None]


def test_first_wau_and_mau_points_are_full_windows(client, dataset):
    """The first points of a range count users seen before `from` (late September events included)."""
    for measure, window in WINDOWS.items():
        rows = client.get(f"/stats/trends?from=2025-10-08&to=2025-10-09&measure={measure}").get_json()
        first = date(2025, 10, 8)
        expected = len({e["user_id"] for e in dataset.events
                        if first - timedelta(days=window - 1) <= Oracle.day(e, "UTC") <= first})
        only_that_day = len({e["user_id"] for e in dataset.events if Oracle.day(e, "UTC") == first})
        assert rows[0]["value"] == expected > only_that_day


def test_hour_buckets_on_dst_days(client, dataset):
    rows = client.get("/stats/trends?from=2025-10-26&to=2025-10-26&interval=hour&tz=Europe/Kyiv").get_json()
    labels = [r["bucket"] for r in rows]
    assert len(labels) == 25 and labels.count("2025-10-26T03:00:00+03:00") == 1
    assert labels.index("2025-10-26T03:00:00+02:00") == labels.index("2025-10-26T03:00:00+03:00") + 1
    assert rows[3]["value"] > 0 and rows[4]["value"] > 0  # both copies of the repeated hour have events
    rows = client.get("/stats/trends?from=2025-03-30&to=2025-03-30&interval=hour&tz=Europe/Kyiv").get_json()
    labels = [r["bucket"] for r in rows]
    assert len(labels) == 23 and "2025-03-30T03:00:00+03:00" not in labels
    assert labels[2:4] == ["2025-03-30T02:00:00+02:00", "2025-03-30T04:00:00+03:00"]


def test_stickiness_and_lifecycle_match_python(client, dataset, project_tz):
    for tz in (None,) + TZS:
        effective = tz or project_tz
        for segments in ((), ("event_type:purchase",), ("properties.platform=ios",)):
            for first, last in (RANGE, (date(2025, 10, 1), date(2025, 10, 31)), (date(2025, 3, 28), date(2025, 4, 2))):
                for interval in ("day", "week"):
                    url = _url("stickiness", segments, **{"from": first, "to": last, "tz": tz, "interval": interval})
                    got = client.get(url)
                    assert got.status_code == 200, got.get_json()
                    assert got.get_json() == dataset.stickiness(first, last, effective, segments, interval), url
                for interval in ("day", "week", "month"):
                    url = _url("lifecycle", segments, **{"from": first, "to": last, "tz": tz, "interval": interval})
                    got = client.get(url)
                    assert got.status_code == 200, got.get_json()
                    assert got.get_json() == dataset.lifecycle(first, last, effective, segments, interval), url


@pytest.mark.parametrize("query, name", [
    ("measure=visits", "measure"),
    ("measure=sum", "property"),
    ("measure=p99&property=", "property"),
    ("measure=users&property=price", "property"),
    ("measure=wau&interval=week", "interval"),
    ("measure=mau&interval=month", "interval"),
    ("interval=minute", "interval"),
    ("limit=0", "limit"),
    ("limit=101", "limit"),
    ("breakdown=platform", "breakdown"),
    ("breakdown=properties.", "breakdown"),
    ("compare=next", "compare"),
    ("tz=Mars/Base", "tz"),
    ("segment=plan", "segment"),
    ("colour=red", "colour"),
    ("measure=sum&property=pr%00ice", "property"),
    ("breakdown=properties.pl%00atform", "breakdown"),
])
def test_bad_trends_parameters_are_400s_naming_them(client, query, name):
    response = client.get(f"/stats/trends?from=2025-10-01&to=2025-10-31&{query}")
    assert response.status_code == 400, response.get_json()
    assert name in response.get_json()["errors"]["query"]


def test_more_than_2000_buckets_is_a_400(client):
    response = client.get("/stats/trends?from=2025-01-01&to=2025-03-31&interval=hour")
    assert response.status_code == 400
    assert "2000" in response.get_json()["errors"]["query"]["interval"][0].replace(",", "")
    assert client.get("/stats/trends?from=2025-01-01&to=2025-03-24&interval=hour").status_code == 200  # 1,992


@pytest.mark.parametrize("path, query, name", [
    ("stickiness", "interval=month", "interval"), ("lifecycle", "interval=hour", "interval"),
    ("lifecycle", "from=2025-12-01", "to"), ("stickiness", "measure=events", "measure"),
])
def test_bad_stickiness_and_lifecycle_parameters_are_400s(client, path, query, name):
    response = client.get(f"/stats/{path}?to=2025-10-31&{query}" + ("" if "from=" in query else "&from=2025-10-01"))
    assert response.status_code == 400, response.get_json()
    assert name in response.get_json()["errors"]["query"]


def test_openapi_documents_the_new_questions(client):
    spec = client.get("/openapi.json").get_json()
    trends = spec["paths"]["/stats/trends"]["get"]
    names = {p["name"] for p in trends["parameters"]}
    assert {"from", "to", "tz", "segment", "measure", "property", "interval", "breakdown", "limit", "compare"} <= names
    assert "400" in trends["responses"] and "2,000 buckets" in trends["responses"]["400"]["description"]
    measure = next(p for p in trends["parameters"] if p["name"] == "measure")
    assert "percentile_cont" in measure["description"]
    for path in ("/stats/stickiness", "/stats/lifecycle"):
        assert "400" in spec["paths"][path]["get"]["responses"]


def test_rollup_and_scan_variants_agree(app, engine, dataset):
    """Every question the project rollups answer gives the same rows from a scan of events."""
    from eventsapp.stats import trends as questions
    from eventsapp.stats.router import Scope

    scope = Scope(tz="UTC", rollup_tz="UTC")
    with engine.connect() as connection:
        for measure, interval, breakdown in (("events", "day", None), ("events", "week", questions.Breakdown("event_type")),
                                             ("users", "day", None), ("users", "month", None), ("wau", "day", None),
                                             ("mau", "day", None)):
            arguments = dict(from_=RANGE[0], to=RANGE[1], measure=measure, interval=interval, breakdown=breakdown,
                             compare="previous")
            assert (questions.trends(connection, scope, kind="project_rollup", **arguments)
                    == questions.trends(connection, scope, kind="scan", **arguments)), arguments
        for interval in ("day", "week"):
            assert (questions.stickiness(connection, scope, from_=RANGE[0], to=RANGE[1], interval=interval, kind="scan")
                    == questions.stickiness(connection, scope, from_=RANGE[0], to=RANGE[1], interval=interval,
                                            kind="project_rollup"))
        for interval in ("day", "week", "month"):
            assert (questions.lifecycle(connection, scope, from_=RANGE[0], to=RANGE[1], interval=interval, kind="scan")
                    == questions.lifecycle(connection, scope, from_=RANGE[0], to=RANGE[1], interval=interval,
                                           kind="project_rollup"))


@pytest.mark.parametrize("path", ["trends", "stickiness", "lifecycle"])
def test_timezone_abbreviations_are_refused(client, path):
    response = client.get(f"/stats/{path}?from=2025-10-01&to=2025-10-31&tz=CET")
    assert response.status_code == 400 and "tz" in response.get_json()["errors"]["query"]
