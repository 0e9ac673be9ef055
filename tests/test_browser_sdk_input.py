"""Hostile SDK input (issue 18 items 3 and 7): lone surrogates are a 400 naming the field, and a
request with an unknown key is refused before its gzip body is inflated or parsed."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import datetime, timezone

import pytest

from conftest import stored_count

SURROGATE = "\\ud800"  # as JSON text: a lone high surrogate, valid JSON, not valid UTF-8


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _segment_message(**fields: str) -> str:
    """A Segment track message as JSON text; ``fields`` are raw JSON values spliced in."""
    base = {"type": '"track"', "userId": '"u-1"', "event": '"Signed Up"', "timestamp": json.dumps(_now())}
    base.update(fields)
    return "{" + ", ".join(f'"{key}": {value}' for key, value in base.items()) + "}"


def _posthog_event(**fields: str) -> str:
    base = {"event": '"clicked"', "distinct_id": '"u-1"', "timestamp": json.dumps(_now())}
    base.update(fields)
    return "{" + ", ".join(f'"{key}": {value}' for key, value in base.items()) + "}"


SEGMENT_CASES = {
    "messageId": _segment_message(messageId=f'"id-{SURROGATE}"'),
    "integrations": _segment_message(
        messageId='"m-1"', integrations=f'{{"All": true, "x{SURROGATE}": false}}'
    ),
    "properties": _segment_message(properties=f'{{"name": "a{SURROGATE}"}}'),  # no messageId: id from content
    "context": _segment_message(context=f'{{"page": {{"title": ["{SURROGATE}"]}}}}'),
}


@pytest.mark.parametrize("field", SEGMENT_CASES)
def test_segment_lone_surrogate_is_400_naming_message_and_field(client, engine, field):
    good = _segment_message(messageId='"m-ok"')
    body = '{"batch": [' + good + ", " + SEGMENT_CASES[field] + "]}"
    response = client.post("/v1/batch", data=body, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "surrogate" in response.json["errors"]["json"]["batch"]["1"][field][0]
    assert "0" not in response.json["errors"]["json"]["batch"]
    assert stored_count(engine) == 0


POSTHOG_CASES = {
    "uuid": _posthog_event(uuid=f'"{SURROGATE}"'),
    "properties": _posthog_event(
        uuid=json.dumps(str(uuid.uuid4())), properties=f'{{"$lib": "web{SURROGATE}"}}'
    ),
    "$set": _posthog_event(**{"$set": f'{{"k": "{SURROGATE}"}}'}),  # no uuid: id from content
    "event": _posthog_event(event=f'"click{SURROGATE}"'),
}


@pytest.mark.parametrize("field", POSTHOG_CASES)
def test_posthog_lone_surrogate_is_400_naming_event_and_field(client, engine, field):
    good = _posthog_event(uuid=json.dumps(str(uuid.uuid4())))
    body = '{"api_key": "k", "batch": [' + good + ", " + POSTHOG_CASES[field] + "]}"
    response = client.post("/batch/", data=body, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "surrogate" in response.json["errors"]["json"]["batch"]["1"][field][0]
    assert stored_count(engine) == 0


def test_single_segment_call_and_posthog_capture_with_surrogate_are_400(client, engine):
    response = client.post(
        "/v1/track", data=_segment_message(anonymousId=f'"{SURROGATE}"'), content_type="application/json"
    )
    assert response.status_code == 400
    assert "anonymousId" in response.json["errors"]["json"]
    response = client.post(
        "/capture/", data=_posthog_event(distinct_id=f'"{SURROGATE}"'), content_type="application/json"
    )
    assert response.status_code == 400
    assert "distinct_id" in response.json["errors"]["json"]
    assert stored_count(engine) == 0


# --- 18.7: the key before the body -------------------------------------------------------------------


@pytest.fixture
def auth_required(app):
    from eventsapp.security import auth

    saved = {name: app.config[name] for name in ("EVENTSAPP_AUTH", "EVENTSAPP_RATE_LIMIT_AUTH_FAILURES")}
    app.config["EVENTSAPP_AUTH"] = "required"
    auth.clear_cache()
    yield app
    app.config.update(saved)
    auth.clear_cache()


def body_work(step: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("eventsapp_sdk_body_work_total", {"step": step}) or 0


def _big_gzip_batch(key_field: str, key: str, events: int = 4000) -> bytes:
    event = {"event": "e", "distinct_id": "u", "properties": {"pad": "x" * 1000}}
    return gzip.compress(json.dumps({key_field: key, "batch": [event] * events}).encode(), 9)


def test_unknown_header_key_with_big_gzip_body_is_refused_before_inflating(auth_required, client, engine):
    import base64

    body = _big_gzip_batch("api_key", "ea_unknown")
    assert len(body) < 100_000  # small on the wire, ~4 MB inflated
    inflates, parses = body_work("inflate"), body_work("parse")
    basic = {"Authorization": "Basic " + base64.b64encode(b"ea_unknown:").decode()}
    cases = [
        ("/batch/", {"X-API-Key": "ea_unknown"}),
        ("/e/", {"Authorization": "Bearer ea_unknown"}),
        ("/v1/batch", basic),
    ]
    for path, headers in cases:
        response = client.post(path, data=body, content_type="text/plain", headers=headers)
        assert response.status_code == 401, (path, response.get_data(as_text=True))
    assert (body_work("inflate"), body_work("parse")) == (inflates, parses)
    assert stored_count(engine) == 0


def test_unknown_body_key_is_refused_before_parsing(auth_required, client, engine):
    from eventsapp.security import keys

    keys.create_key(engine, "web", ["ingest"])
    parses = body_work("parse")
    for data in (
        _big_gzip_batch("api_key", "ea_unknown"),
        json.dumps({"api_key": "ea_unknown", "batch": [{"event": "e", "distinct_id": "u"}] * 2000}).encode(),
    ):
        response = client.post("/batch/", data=data, content_type="text/plain")
        assert response.status_code == 401
    no_key = client.post(
        "/batch/",
        data=json.dumps({"batch": [{"event": "e", "distinct_id": "u"}]}),
        content_type="application/json",
    )
    assert no_key.status_code == 401
    assert body_work("parse") == parses
    assert stored_count(engine) == 0


def test_client_over_its_unknown_key_limit_is_refused_before_reading_the_body(auth_required, client, engine):
    auth_required.config["EVENTSAPP_RATE_LIMIT_AUTH_FAILURES"] = "2/minute"
    body = _big_gzip_batch("api_key", "ea_unknown")
    statuses = [client.post("/batch/", data=body, content_type="text/plain").status_code for _ in range(2)]
    assert statuses == [401, 401]
    inflates = body_work("inflate")
    for _ in range(3):
        response = client.post("/batch/", data=body, content_type="text/plain")
        assert response.status_code == 429 and response.headers["Retry-After"]
    assert body_work("inflate") == inflates


def test_known_key_in_a_gzip_body_is_found_and_stored(auth_required, client, engine):
    from eventsapp.security import keys

    key = keys.create_key(engine, "web", ["ingest"])
    # posthog-js: gzip as text/plain, no Content-Encoding, the token inside each event's properties.
    events = [
        {
            "event": "clicked",
            "uuid": str(uuid.uuid4()),
            "properties": {"token": key, "distinct_id": "u-1", "$lib": "web"},
        }
        for _ in range(3)
    ]
    response = client.post("/e/", data=gzip.compress(json.dumps(events).encode()), content_type="text/plain")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert stored_count(engine) == 3


def test_spent_budget_of_a_body_key_is_429_before_parsing(auth_required, client, engine):
    from eventsapp.security import keys

    saved = auth_required.config["EVENTSAPP_RATE_LIMIT_INGEST"], auth_required.config.get(
        "RATELIMIT_KEY_PREFIX"
    )
    auth_required.config["EVENTSAPP_RATE_LIMIT_INGEST"] = "2/minute"
    auth_required.config["RATELIMIT_KEY_PREFIX"] = f"test-{uuid.uuid4()}"
    try:
        key = keys.create_key(engine, "web", ["ingest"])
        body = _big_gzip_batch("api_key", key, events=50)
        assert [
            client.post("/batch/", data=body, content_type="text/plain").status_code for _ in range(2)
        ] == [200, 200]
        parses = body_work("parse")
        response = client.post("/batch/", data=body, content_type="text/plain")
        assert response.status_code == 429 and response.headers["Retry-After"]
        assert body_work("parse") == parses
    finally:
        auth_required.config["EVENTSAPP_RATE_LIMIT_INGEST"], auth_required.config["RATELIMIT_KEY_PREFIX"] = (
            saved
        )


def test_body_whose_parsed_key_differs_from_the_scanned_one_is_refused(auth_required, client, engine):
    from eventsapp.security import keys

    first = keys.create_key(engine, "one", ["ingest"])
    second = keys.create_key(engine, "two", ["ingest"])
    # api_key appears twice in the text (a property named like it first); the top-level one wins the parse.
    body = json.dumps(
        {"batch": [{"event": "e", "distinct_id": "u", "properties": {"api_key": first}}], "api_key": second}
    )
    response = client.post("/batch/", data=body, content_type="application/json")
    assert response.status_code == 401 and "two different" in response.json["message"]
    assert stored_count(engine) == 0


# --- what the browser SDKs send ----------------------------------------------------------------------


def _posthog_js_body(event_uuid: str) -> bytes:
    return json.dumps(
        {
            "api_key": "k",
            "sent_at": _now(),
            "batch": [
                {
                    "uuid": event_uuid,
                    "event": "$pageview",
                    "timestamp": _now(),
                    "properties": {
                        "distinct_id": "anon-1",
                        "$current_url": "https://app.example.com/p?q=1",
                        "$pathname": "/p",
                        "$referrer": "https://ref.example.org/",
                        "token": "k",
                    },
                }
            ],
        }
    ).encode()


def _form(data: bytes) -> bytes:
    from urllib.parse import quote

    import base64

    return b"data=" + quote(base64.b64encode(data).decode(), safe="").encode()


@pytest.mark.parametrize(
    "variant",
    [
        "gzip text/plain",
        "gzip-js query",
        "gzip header",
        "json text/plain",
        "json",
        "base64 form",
        "gzip base64 form",
    ],
)
def test_every_posthog_js_body_encoding_stores_the_pageview_as_sent(client, engine, variant):
    from conftest import stored

    event_uuid = str(uuid.uuid4())
    body = _posthog_js_body(event_uuid)
    path, content_type, headers = "/e/", "text/plain", {}
    if variant == "gzip text/plain":
        body = gzip.compress(body)
    elif variant == "gzip-js query":
        body, path = gzip.compress(body), "/e/?compression=gzip-js&ip=0&ver=1.449.2"
    elif variant == "gzip header":
        body, content_type, headers = gzip.compress(body), "application/json", {"Content-Encoding": "gzip"}
    elif variant == "json":
        content_type = "application/json"
    elif variant == "base64 form":
        body, path, content_type = _form(body), "/e/?compression=base64", "application/x-www-form-urlencoded"
    elif variant == "gzip base64 form":
        body, content_type = _form(gzip.compress(body)), "application/x-www-form-urlencoded"
    response = client.post(path, data=body, content_type=content_type, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    (row,) = stored(engine)
    assert (row["event_id"], row["user_id"], row["event_type"]) == (event_uuid, "anon-1", "$pageview")
    assert row["properties"]["$current_url"] == "https://app.example.com/p?q=1"
    assert (row["properties"]["$pathname"], row["properties"]["$referrer"]) == (
        "/p",
        "https://ref.example.org/",
    )
    # A retry of the same request is a duplicate, not a second event.
    again = client.post(path, data=body, content_type=content_type, headers=headers)
    assert again.status_code == 200 and again.json["duplicates"] == 1
    assert len(stored(engine)) == 1


@pytest.mark.parametrize(
    "body, content_type, status",
    [
        (gzip.compress(b'{"batch": []}') + b"trailing", "text/plain", 400),
        (b"\x1f\x8b\x08\x00broken", "text/plain", 400),
        (b"data=%%%", "application/x-www-form-urlencoded", 400),
        (b"data=not-base64!", "application/x-www-form-urlencoded", 400),
        (b"other=1", "application/x-www-form-urlencoded", 400),
        (b"{}", "application/xml", 415),
    ],
)
def test_broken_browser_bodies_are_4xx_naming_the_problem(client, engine, body, content_type, status):
    response = client.post("/e/", data=body, content_type=content_type)
    assert response.status_code == status and response.json["message"]
    assert stored_count(engine) == 0


def test_segment_short_paths_and_batch_as_analytics_js_sends_them(client, engine):
    from conftest import stored

    message = {
        "type": "page",
        "userId": "u-1",
        "messageId": "ajs-next-1-x",
        "timestamp": _now(),
        "sentAt": _now(),
        "properties": {
            "path": "/pricing",
            "url": "https://app.example.com/pricing",
            "referrer": "",
            "title": "P",
        },
        "integrations": {},
        "writeKey": "wk",
    }
    assert client.post("/v1/p", data=json.dumps(message), content_type="text/plain").status_code == 200
    track = dict(message, type="track", event="Clicked", messageId="ajs-next-2-y")
    body = json.dumps(
        {"writeKey": "wk", "sentAt": _now(), "batch": [track, message]}
    )  # the page again: duplicate
    response = client.post("/v1/b", data=body, content_type="text/plain")
    assert response.status_code == 200 and (response.json["ingested"], response.json["duplicates"]) == (1, 1)
    rows = {row["event_type"]: row for row in stored(engine)}
    assert rows.keys() == {"$page", "Clicked"}
    assert rows["$page"]["properties"]["url"] == "https://app.example.com/pricing"


def test_sdk_configuration_answers(client):
    script = client.get('/array/phc_"<!--<script>/config.js')
    text = script.get_data(as_text=True)
    assert script.status_code == 200 and script.mimetype == "application/javascript"
    assert (
        "<" not in text and '"phc_\\"\\u003c!--\\u003cscript>"' in text
    )  # a string literal that cannot end the script
    config = client.get("/array/phc_1/config").json
    assert config["supportedCompression"] == ["gzip", "gzip-js"] and config["hasFeatureFlags"] is False
    assert "surveys" not in config  # any value (even false) makes posthog-js fetch a surveys bundle
    assert (
        client.post("/flags/?v=2", data=gzip.compress(b"{}"), content_type="text/plain").json["flags"] == {}
    )
    settings = client.get("/v1/projects/wk_1/settings", headers={"Host": "events.example.com"}).json
    assert list(settings["integrations"]) == ["Segment.io"]
    assert settings["integrations"]["Segment.io"]["apiHost"] == "events.example.com/v1"
    assert settings["metrics"]["sampleRate"] == 0


def test_a_browser_clock_off_by_hours_is_corrected_on_both_sdks(client, engine):
    from datetime import timedelta

    from conftest import stored

    browser_now = datetime.now(timezone.utc) + timedelta(hours=3, minutes=7)  # the visitor's wrong clock
    fired = (browser_now - timedelta(seconds=40)).isoformat()
    posthog_body = {
        "api_key": "k",
        "sent_at": browser_now.isoformat(),
        "batch": [
            {
                "uuid": str(uuid.uuid4()),
                "event": "clicked",
                "timestamp": fired,
                "properties": {"distinct_id": "u"},
            }
        ],
    }
    segment_body = {
        "type": "track",
        "event": "Clicked",
        "userId": "u",
        "messageId": "ajs-next-9-z",
        "timestamp": fired,
        "sentAt": browser_now.isoformat(),
        "writeKey": "k",
    }
    before = datetime.now(timezone.utc)
    assert (
        client.post(
            "/e/", data=gzip.compress(json.dumps(posthog_body).encode()), content_type="text/plain"
        ).status_code
        == 200
    )
    assert client.post("/v1/t", data=json.dumps(segment_body), content_type="text/plain").status_code == 200
    after = datetime.now(timezone.utc)
    for row in stored(engine):  # received_at - (sent_at - timestamp): 40 s before arrival
        assert before - timedelta(seconds=40) <= row["occurred_at"] <= after - timedelta(seconds=40)
