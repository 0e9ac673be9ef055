"""GET /users/{id} and GET /users/{id}/events: summaries and keyset pages checked against plain Python."""
from __future__ import annotations

import random
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from conftest import make_event

UTC = timezone.utc


def _events(user: str, count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    start = datetime(2025, 8, 1, tzinfo=UTC)
    events = []
    for _ in range(count):
        at = start + timedelta(seconds=rng.randrange(10 * 86400))
        events.append(make_event(user_id=user, occurred_at=at.isoformat(),
                                 event_type=rng.choice(["view", "buy", "Ω-open"]),
                                 properties={"i": rng.randrange(10**30), "tag": "ü"}))
    # Ties on occurred_at: the event_id decides the order.
    events += [make_event(user_id=user, occurred_at="2025-08-05T12:00:00Z", event_type="tie") for _ in range(5)]
    return events


def _order(events: list[dict]) -> list[dict]:
    return sorted(events, key=lambda e: (datetime.fromisoformat(e["occurred_at"]), e["event_id"]), reverse=True)


def _pages(client, user: str, **params) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        response = client.get(f"/users/{user}/events", query_string={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        pages.append(body["events"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_summary_counts_first_and_last_seen(client):
    events = _events("u/1 ü", 60, 1) + _events("other", 10, 2)
    client.post("/events", json=events)
    mine = [e for e in events if e["user_id"] == "u/1 ü"]
    body = client.get("/users/u/1 ü").get_json()
    times = [datetime.fromisoformat(e["occurred_at"]) for e in mine]
    assert body["user_id"] == "u/1 ü" and body["events"] == len(mine)
    assert datetime.fromisoformat(body["first_seen"]) == min(times)
    assert datetime.fromisoformat(body["last_seen"]) == max(times)
    assert body["event_types"] == dict(Counter(e["event_type"] for e in mine))
    assert client.get("/users/nobody").status_code == 404
    assert client.get("/users/nobody/events").status_code == 404


def test_pages_walk_every_event_newest_first_exactly_once(client):
    events = _events("walker", 47, 3)
    client.post("/events", json=events)
    pages = _pages(client, "walker", limit=10)
    assert [len(p) for p in pages] == [10, 10, 10, 10, 10, 2]
    got = [e for page in pages for e in page]
    assert [e["event_id"] for e in got] == [e["event_id"] for e in _order(events)]
    first = got[0]
    original = next(e for e in events if e["event_id"] == first["event_id"])
    assert first["properties"] == original["properties"]        # 30-digit integers exactly
    assert first["event_type"] == original["event_type"] and first["user_id"] == "walker"


def test_pages_stay_right_while_new_events_arrive(client):
    events = _events("live", 30, 4)
    client.post("/events", json=events)
    seen, cursor = [], None
    late = []
    for step in range(100):
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        body = client.get("/users/live/events", query_string=params).get_json()
        seen += body["events"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # Between pages: a brand-new event (newer than everything) and a late one far in the past.
        newer = make_event(user_id="live", occurred_at=datetime.now(UTC).isoformat())
        older = make_event(user_id="live", occurred_at=(datetime(2025, 7, 1, tzinfo=UTC) + timedelta(hours=step)).isoformat())
        late.append(older)
        client.post("/events", json=[newer, older])
    # Every event there was at the start, and every late one older than the pages walked, exactly once,
    # in order; none of the newer ones (they sort before the first page).
    assert [e["event_id"] for e in seen] == [e["event_id"] for e in _order(events + late)]


def test_range_timezone_and_event_type_filters(client):
    events = _events("f", 80, 5)
    client.post("/events", json=events)
    tz = "America/New_York"
    zone = ZoneInfo(tz)
    first, last = date(2025, 8, 3), date(2025, 8, 6)
    expected = [e for e in events
                if first <= datetime.fromisoformat(e["occurred_at"]).astimezone(zone).date() <= last
                and e["event_type"] == "buy"]
    pages = _pages(client, "f", **{"from": first.isoformat(), "to": last.isoformat(), "tz": tz,
                                   "event_type": "buy", "limit": 4})
    got = [e for page in pages for e in page]
    assert [e["event_id"] for e in got] == [e["event_id"] for e in _order(expected)]
    assert all(datetime.fromisoformat(e["occurred_at"]).utcoffset() == timedelta(hours=-4) for e in got)
    # A range with nothing in it is an empty page, not a 404: the user exists.
    body = client.get("/users/f/events", query_string={"from": "2020-01-01", "to": "2020-01-02"}).get_json()
    assert body == {"events": [], "next_cursor": None}


@pytest.mark.parametrize("params, field", [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"tz": "Mars/Base"}, "tz"),
    ({"from": "2025-08-05", "to": "2025-08-01"}, "to"), ({"from": "yesterday"}, "from"),
    ({"cursor": "not-a-cursor"}, "cursor"), ({"colour": "red"}, "colour"), ({"event_type": ""}, "event_type"),
    ({"tz": "CET"}, "tz"), ({"from": "0001-01-01"}, "from"), ({"to": "9999-12-31"}, "to"),
    ({"event_type": "buy\x00"}, "event_type"), ({"cursor": "\x00"}, "cursor"),
    ({"limit": ["1", "2"]}, "limit"),  # given twice: ambiguous, as on /stats
])
def test_bad_parameters_are_400_naming_them(client, params, field):
    client.post("/events", json=[make_event(user_id="p")])
    response = client.get("/users/p/events", query_string=params)
    assert response.status_code == 400, response.get_json()
    assert field in response.get_json()["errors"]["query"]


def test_a_nul_in_the_user_id_is_a_400_naming_it(client):
    for response in (client.get("/users/a%00b"), client.get("/users/a%00b/events"), client.delete("/users/a%00b")):
        assert response.status_code == 400, response.get_json()
        assert "user_id" in response.get_json()["errors"]["path"]
