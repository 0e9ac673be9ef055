"""The real Segment SDK (segment-analytics-python) pointed at a live server, plus the raw HTTP API."""
from __future__ import annotations

import base64
import gzip
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests
from prometheus_client import REGISTRY
from segment.analytics import Client

from conftest import stored, stored_count
from eventsapp.sdk.service import SEGMENT_NAMESPACE


def server_requests(status: int) -> float:
    return REGISTRY.get_sample_value("eventsapp_sdk_requests_total", {"sdk": "segment", "status": str(status)}) or 0


def make_client(live_server, **options) -> tuple[Client, list]:
    failures: list = []
    options.setdefault("max_retries", 3)
    client = Client("wk_test", host=live_server, upload_interval=0.05,
                    on_error=lambda error, batch: failures.append((error, batch)), **options)
    return client, failures


@pytest.mark.parametrize("use_gzip", [False, True], ids=["plain", "gzip"])
def test_sdk_track_identify_page_arrive_as_events(live_server, engine, use_gzip):
    client, failures = make_client(live_server, gzip=use_gzip)
    when = datetime.now(timezone.utc) - timedelta(hours=2)
    client.track(user_id="u-1", event="Order Completed", properties={"revenue": 12.5, "currency": "EUR"},
                 timestamp=when)
    client.identify(user_id="u-1", traits={"plan": "pro", "email": "a@example.com"},
                    timestamp=when + timedelta(minutes=1))
    client.page(anonymous_id="anon-9", category="Docs", name="Pricing",
                properties={"url": "https://example.com/pricing"}, timestamp=when + timedelta(minutes=2))
    client.flush()
    client.join()
    assert failures == []

    rows = stored(engine)
    assert [(r["user_id"], r["event_type"]) for r in rows] == [
        ("u-1", "Order Completed"), ("u-1", "$identify"), ("anon-9", "$page")]
    track, identify, page = rows
    assert track["properties"]["revenue"] == 12.5 and track["properties"]["currency"] == "EUR"
    assert track["properties"]["$context"]["library"]["name"] == "analytics-python"
    assert identify["properties"]["plan"] == "pro" and identify["properties"]["email"] == "a@example.com"
    assert page["properties"]["url"] == "https://example.com/pricing"
    assert page["properties"]["$name"] == "Pricing" and page["properties"]["$category"] == "Docs"
    # The SDK sends sentAt a moment after the timestamp; skew correction keeps the event time within
    # the upload delay of what the app said.
    for row, expected in zip(rows, (when, when + timedelta(minutes=1), when + timedelta(minutes=2))):
        assert abs(row["occurred_at"] - expected) < timedelta(seconds=5)
    # SDK messageIds are UUIDs, stored as the event_id.
    assert all(uuid.UUID(r["event_id"]).version == 4 for r in rows)


def test_sync_mode_screen_group_alias(live_server, engine):
    client, _ = make_client(live_server, sync_mode=True)
    client.screen(user_id="u-2", name="Home", properties={"tab": 1})
    client.group(user_id="u-2", group_id="acme", traits={"seats": 10})
    client.alias(previous_id="anon-2", user_id="u-2")
    rows = stored(engine, order_by="event_type")
    assert [(r["user_id"], r["event_type"]) for r in rows] == [
        ("u-2", "$alias"), ("u-2", "$group"), ("u-2", "$screen")]
    alias, group, screen = rows
    assert alias["properties"]["$previous_id"] == "anon-2"
    assert group["properties"]["$group_id"] == "acme" and group["properties"]["seats"] == 10
    assert screen["properties"]["$name"] == "Home" and screen["properties"]["tab"] == 1


def test_resent_messages_are_stored_once(live_server, engine):
    """Same messageIds again (an SDK retry after a lost response): nothing new is stored."""
    for _ in range(2):
        client, failures = make_client(live_server, gzip=True)
        client.track(user_id="u-3", event="Signed Up", message_id="signup-u-3")  # not a UUID
        client.track(user_id="u-3", event="Viewed", message_id="6f1c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f")
        client.flush()
        client.join()
        assert failures == []
    rows = stored(engine, order_by="event_type")
    assert len(rows) == 2
    assert {r["event_id"] for r in rows} == {
        str(uuid.uuid5(SEGMENT_NAMESPACE, "signup-u-3")), "6f1c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f"}


def test_bad_message_refused_with_400_and_sdk_gives_up_at_once(live_server, engine):
    before = server_requests(400)
    client, failures = make_client(live_server, max_retries=5)
    client.track(user_id="u-4", event="Good")
    client.track(user_id="x" * 300, event="Too long a user id")
    client.flush()
    client.join()
    # Both messages went in one batch; the whole batch is refused, once, and the SDK dropped it.
    assert server_requests(400) - before == 1
    assert len(failures) == 1
    error, batch = failures[0]
    assert error.status == 400 and error.code == 400
    assert "1 of 2 messages are invalid" in error.message
    assert len(batch) == 2
    assert stored_count(engine) == 0


def test_error_names_message_index_and_segment_field(client, engine):
    now = datetime.now(timezone.utc).isoformat()
    body = {"batch": [
        {"type": "track", "event": "ok", "userId": "u", "timestamp": now},
        {"type": "track", "userId": "u"},
        {"type": "identify", "timestamp": "yesterday"},
        {"type": "shout", "userId": "u"},
        {"type": "track", "event": "x", "userId": "u", "properties": {"v": float("nan")}},
    ], "sentAt": now}
    response = client.post("/v1/batch", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    payload = response.get_json()
    assert payload["code"] == 400 and "4 of 5 messages are invalid" in payload["message"]
    errors = payload["errors"]["json"]["batch"]
    assert set(errors) == {"1", "2", "3", "4"}
    assert "event" in errors["1"]
    assert "timestamp" in errors["2"] and "userId" in errors["2"]
    assert "type" in errors["3"]
    assert errors["4"]["properties"] == [
        "NaN and Infinity are not valid JSON numbers (nor is a number past a double's range, like 1e400)."]
    assert stored_count(engine) == 0


def test_a_type_that_is_not_a_string_is_named_not_a_crash(client, engine):
    body = {"batch": [{"type": ["track"], "event": "e", "userId": "u"}, {"type": {"a": 1}, "userId": "u"}]}
    response = client.post("/v1/batch", json=body)
    assert response.status_code == 400
    errors = response.get_json()["errors"]["json"]["batch"]
    assert set(errors) == {"0", "1"} and all("type" in errors[index] for index in errors)
    assert stored_count(engine) == 0


def test_clock_skew_is_corrected_from_sent_at(client, engine):
    """A device clock three days fast: occurred_at = received_at - (sentAt - timestamp)."""
    device_now = datetime.now(timezone.utc) + timedelta(days=3)
    body = {"batch": [{"type": "track", "event": "e", "userId": "u", "messageId": "m-1",
                       "timestamp": (device_now - timedelta(minutes=10)).isoformat()}],
            "sentAt": device_now.isoformat()}
    assert client.post("/v1/batch", json=body).status_code == 200
    (row,) = stored(engine)
    assert abs(row["occurred_at"] - (datetime.now(timezone.utc) - timedelta(minutes=10))) < timedelta(seconds=5)

    # Without sentAt the same timestamp is taken as is, and is refused: more than a day ahead.
    del body["sentAt"]
    body["batch"][0]["messageId"] = "m-2"
    response = client.post("/v1/batch", json=body)
    assert response.status_code == 400
    assert response.get_json()["errors"]["json"]["batch"]["0"]["timestamp"] == [
        "Must not be more than 1 day in the future."]


def test_single_call_endpoints_and_write_key_sources(client, engine):
    basic = "Basic " + base64.b64encode(b"wk_test:").decode()
    track = client.post("/v1/track", json={"event": "Clicked", "userId": 42, "messageId": 7},
                        headers={"Authorization": basic})
    assert track.status_code == 200
    assert track.get_json() == {"success": True, "ingested": 1, "duplicates": 0}
    identify = client.post("/v1/identify", json={"anonymousId": "a-1", "traits": {"x": 1}, "writeKey": "wk"})
    assert identify.get_json() == {"success": True, "ingested": 1, "duplicates": 0}
    again = client.post("/v1/track", json={"event": "Clicked", "userId": 42, "messageId": 7})
    assert again.get_json() == {"success": True, "ingested": 0, "duplicates": 1}
    rows = stored(engine, order_by="event_type")
    assert [(r["user_id"], r["event_type"]) for r in rows] == [("a-1", "$identify"), ("42", "Clicked")]
    assert rows[1]["event_id"] == str(uuid.uuid5(SEGMENT_NAMESPACE, "7"))


def test_message_without_message_id_gets_a_stable_id(client, engine):
    message = {"type": "track", "event": "e", "userId": "u", "timestamp": datetime.now(timezone.utc).isoformat()}
    for _ in range(2):
        assert client.post("/v1/batch", json={"batch": [message]}).status_code == 200
    assert stored_count(engine) == 1


def test_segment_limits(client, engine):
    now = datetime.now(timezone.utc).isoformat()
    too_many = {"batch": [{"type": "track", "event": "e", "userId": "u", "timestamp": now}] * 2501}
    response = client.post("/v1/batch", json=too_many)
    assert response.status_code == 413 and "at most 2500 messages" in response.get_json()["message"]

    big = {"type": "track", "event": "e", "userId": "u", "properties": {"blob": "x" * 33_000}}
    response = client.post("/v1/batch", json={"batch": [{"type": "track", "event": "e", "userId": "u"}, big]})
    assert response.status_code == 400
    assert "at most 32768 bytes" in response.get_json()["errors"]["json"]["batch"]["1"]["_schema"][0]

    fifteen = {"type": "track", "event": "e", "userId": "u", "properties": {"blob": "x" * 30_000}}
    response = client.post("/v1/batch", json={"batch": [fifteen] * 18})  # ~540 KB
    assert response.status_code == 413

    bomb = gzip.compress(json.dumps({"batch": [fifteen] * 18}).encode())
    response = client.post("/v1/batch", data=bomb, content_type="application/json",
                           headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413 and "inflates" in response.get_json()["message"]
    assert stored_count(engine) == 0


def test_transport_errors_are_not_retryable_statuses(live_server):
    """Bad JSON, wrong content type, corrupt gzip: 4xx that the SDK drops, with code and message."""
    url = live_server + "/v1/batch"
    cases = [
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b"{}", {"Content-Type": "application/xml"}, 415),  # text/plain is JSON from a browser SDK
        (b"\x1f\x8b garbage", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400),
        (b'{"batch": []}', {"Content-Type": "application/json"}, 400),
    ]
    for data, headers, status in cases:
        response = requests.post(url, data=data, headers=headers, timeout=10)
        assert response.status_code == status, data
        payload = response.json()
        assert payload["code"] == status and payload["message"]


def test_every_problem_of_a_message_is_reported_at_once(client, engine):
    body = {"batch": [{"type": "track", "event": "e" * 200, "userId": "u" * 300, "timestamp": "noon",
                       "properties": {"v": float("inf")}}]}
    response = client.post("/v1/batch", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    errors = response.get_json()["errors"]["json"]["batch"]["0"]
    assert set(errors) == {"event", "userId", "timestamp", "properties"}
    assert errors["userId"] == ["Length must be between 1 and 256."]
    assert stored_count(engine) == 0
