"""The real PostHog SDK (posthog-python) pointed at a live server, plus the raw capture API."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests
from posthog import Posthog
from prometheus_client import REGISTRY

from conftest import stored, stored_count


def server_requests(status: int) -> float:
    return REGISTRY.get_sample_value("eventsapp_sdk_requests_total", {"sdk": "posthog", "status": str(status)}) or 0


def make_client(live_server, **options) -> tuple[Posthog, list]:
    failures: list = []
    options.setdefault("max_retries", 3)
    client = Posthog("phc_test", host=live_server, flush_interval=0.05,
                     on_error=lambda error, batch: failures.append((error, batch)), **options)
    return client, failures


@pytest.mark.parametrize("use_gzip", [False, True], ids=["plain", "gzip"])
def test_sdk_capture_and_identify_arrive_as_events(live_server, engine, use_gzip):
    client, failures = make_client(live_server, gzip=use_gzip)
    when = datetime.now(timezone.utc) - timedelta(hours=3)
    first = client.capture("movie played", distinct_id="user-1", properties={"title": "Up", "minutes": 96},
                           timestamp=when)
    second = client.capture("$pageview", distinct_id="user-2", properties={"$current_url": "https://x.test/"},
                            timestamp=when + timedelta(minutes=5))
    identify = client.set(distinct_id="user-1", properties={"plan": "pro"}, timestamp=when + timedelta(minutes=6))
    client.shutdown()
    assert failures == []

    rows = stored(engine)
    assert [(r["user_id"], r["event_type"]) for r in rows] == [
        ("user-1", "movie played"), ("user-2", "$pageview"), ("user-1", "$set")]
    assert [r["event_id"] for r in rows] == [first, second, identify]
    movie, pageview, set_ = rows
    assert movie["properties"]["title"] == "Up" and movie["properties"]["minutes"] == 96
    assert movie["properties"]["$lib"] == "posthog-python"
    assert pageview["properties"]["$current_url"] == "https://x.test/"
    assert set_["properties"]["$set"] == {"plan": "pro"}  # top-level $set kept under properties
    for row, expected in zip(rows, (when, when + timedelta(minutes=5), when + timedelta(minutes=6))):
        assert abs(row["occurred_at"] - expected) < timedelta(seconds=5)


def test_sync_mode_and_resent_uuid_stored_once(live_server, engine):
    event_uuid = str(uuid.uuid4())
    for use_gzip in (False, True):
        client, failures = make_client(live_server, sync_mode=True, gzip=use_gzip)
        assert client.capture("signed up", distinct_id="user-3", uuid=event_uuid) == event_uuid
        assert failures == []
    rows = stored(engine)
    assert [(r["event_id"], r["user_id"], r["event_type"]) for r in rows] == [(event_uuid, "user-3", "signed up")]


def test_bad_event_refused_with_400_and_sdk_gives_up_at_once(live_server, engine):
    before = server_requests(400)
    client, failures = make_client(live_server, max_retries=5, flush_at=10)
    client.capture("fine", distinct_id="user-4")
    client.capture("from the far future", distinct_id="user-4",
                   timestamp=datetime.now(timezone.utc) + timedelta(days=400))
    client.shutdown()
    # One batch, refused whole, once: no retries.
    assert server_requests(400) - before == 1
    assert len(failures) == 1
    error, batch = failures[0]
    assert error.status == 400 and len(batch) == 2
    assert stored_count(engine) == 0


def test_success_is_exactly_200_on_every_capture_path(live_server, engine):
    now = datetime.now(timezone.utc).isoformat()
    paths = ["/batch/", "/batch", "/capture/", "/capture", "/e/", "/e", "/i/v0/e/", "/i/v0/e"]
    for index, path in enumerate(paths):
        body = {"api_key": "phc_test", "event": f"path {index}", "distinct_id": "d", "timestamp": now}
        if index % 2 == 0:
            body = {"api_key": "phc_test", "batch": [{k: v for k, v in body.items() if k != "api_key"}]}
        response = requests.post(live_server + path, json=body, timeout=10, allow_redirects=False)
        assert response.status_code == 200, path
        assert response.json() == {"status": 1, "ingested": 1, "duplicates": 0}
    assert stored_count(engine) == len(paths)


def test_event_without_uuid_gets_a_stable_id_and_distinct_id_from_properties(client, engine):
    event = {"event": "clicked", "properties": {"distinct_id": 17, "button": "buy"},
             "timestamp": datetime.now(timezone.utc).isoformat()}
    for _ in range(2):
        response = client.post("/capture/", json={"token": "phc", "batch": [event]})
        assert response.status_code == 200
    other = dict(event, properties={"distinct_id": 17, "button": "sell"})
    assert client.post("/capture/", json=[other]).status_code == 200
    rows = stored(engine)
    assert len(rows) == 2 and {r["user_id"] for r in rows} == {"17"}
    assert {r["properties"]["button"] for r in rows} == {"buy", "sell"}


def test_clock_skew_is_corrected_from_sent_at(client, engine):
    device_now = datetime.now(timezone.utc) - timedelta(days=2)  # a device clock two days slow
    body = {"api_key": "k", "sent_at": device_now.isoformat(), "batch": [
        {"event": "e", "distinct_id": "d", "uuid": str(uuid.uuid4()),
         "timestamp": (device_now - timedelta(minutes=30)).isoformat()}]}
    assert client.post("/batch/", json=body).status_code == 200
    (row,) = stored(engine)
    assert abs(row["occurred_at"] - (datetime.now(timezone.utc) - timedelta(minutes=30))) < timedelta(seconds=5)


def test_errors_name_event_index_and_posthog_field(client, engine):
    body = {"api_key": "k", "batch": [
        {"event": "ok", "distinct_id": "d"},
        {"event": "no user"},
        {"distinct_id": "d", "uuid": "not-a-uuid"},
        {"event": "e", "distinct_id": "d", "timestamp": "soon", "properties": []},
    ]}
    response = client.post("/batch/", json=body)
    assert response.status_code == 400
    payload = response.get_json()
    assert "3 of 4 events are invalid" in payload["message"]
    errors = payload["errors"]["json"]["batch"]
    assert set(errors) == {"1", "2", "3"}
    assert "distinct_id" in errors["1"]
    assert "uuid" in errors["2"] and "event" in errors["2"]
    assert "timestamp" in errors["3"] and "properties" in errors["3"]

    response = client.post("/e/", json={"nothing": "here"})
    assert response.status_code == 400
    assert stored_count(engine) == 0


def test_a_sent_at_that_is_not_a_time_is_refused_even_without_timestamps(client, engine):
    body = {"api_key": "k", "sent_at": True, "batch": [{"event": "e", "distinct_id": 42}]}
    response = client.post("/batch/", json=body)
    assert response.status_code == 400
    assert response.get_json()["errors"]["json"]["batch"]["0"]["sent_at"] == ["Not a valid datetime."]
    assert stored_count(engine) == 0
