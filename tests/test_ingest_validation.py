"""Bad input to POST /events is refused precisely, and nothing from the request is stored."""
from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone

import pytest
from marshmallow import ValidationError

from conftest import make_event, stored_count
from eventsapp.ingest import rules
from eventsapp.ingest.schemas import EventSchema

NOW = datetime.now(timezone.utc)
NUL = "\u0000"

# (case id, event overrides or a raw non-dict item, field the error must name, words the message must hold)
BAD_EVENTS = [
    ("unknown field", {"colour": "red"}, "colour", "Unknown field"),
    ("missing event_id", {"event_id": None, "__drop__": "event_id"}, "event_id", "Missing data"),
    ("missing occurred_at", {"__drop__": "occurred_at"}, "occurred_at", "Missing data"),
    ("missing user_id", {"__drop__": "user_id"}, "user_id", "Missing data"),
    ("missing event_type", {"__drop__": "event_type"}, "event_type", "Missing data"),
    ("null user_id", {"user_id": None}, "user_id", "may not be null"),
    ("empty user_id", {"user_id": ""}, "user_id", "between 1 and 256"),
    ("long user_id", {"user_id": "u" * 257}, "user_id", "between 1 and 256"),
    ("numeric user_id", {"user_id": 42}, "user_id", "Not a valid string"),
    ("empty event_type", {"event_type": ""}, "event_type", "between 1 and 128"),
    ("long event_type", {"event_type": "e" * 129}, "event_type", "between 1 and 128"),
    ("bad uuid", {"event_id": "not-a-uuid"}, "event_id", "Not a valid UUID"),
    ("uuid as number", {"event_id": 12345}, "event_id", "Not a valid UUID"),
    ("unparseable time", {"occurred_at": "yesterday at noon"}, "occurred_at", "ISO-8601"),
    ("year 0", {"occurred_at": "0000-01-01T00:00:00Z"}, "occurred_at", "ISO-8601"),
    ("year 10000", {"occurred_at": "10000-01-01T00:00:00Z"}, "occurred_at", "ISO-8601"),
    ("before 1970", {"occurred_at": "1969-12-31T23:59:59Z"}, "occurred_at", "1970"),
    ("two days ahead", {"occurred_at": (NOW + timedelta(days=2)).isoformat()}, "occurred_at", "future"),
    ("time as number", {"occurred_at": 1722500000}, "occurred_at", "Not a valid datetime"),
    ("properties a list", {"properties": [1, 2]}, "properties", "mapping"),
    ("properties a string", {"properties": "{}"}, "properties", "mapping"),
    ("NUL in user_id", {"user_id": f"a{NUL}b"}, "user_id", "NUL"),
    ("NUL in event_type", {"event_type": f"x{NUL}"}, "event_type", "NUL"),
    ("NUL in property value", {"properties": {"k": f"v{NUL}"}}, "properties", "NUL"),
    ("NUL in property key", {"properties": {f"k{NUL}": 1}}, "properties", "NUL"),
    ("properties over 32 KB", {"properties": {"blob": "x" * (32 * 1024)}}, "properties", "32768 bytes"),
    ("not an object", "just a string", "_schema", "Invalid input type"),
]


def _bad_event(overrides):
    if not isinstance(overrides, dict):
        return overrides
    overrides = dict(overrides)
    drop = overrides.pop("__drop__", None)
    event = make_event(**overrides)
    if drop:
        event.pop(drop)
    return event


@pytest.mark.parametrize("case,overrides,field,words", BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
def test_bad_event_is_refused_by_index_and_field_and_nothing_is_stored(client, engine, case, overrides, field, words):
    batch = [make_event(), make_event(), _bad_event(overrides), make_event()]
    response = client.post("/events", json=batch)
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["code"] == 422
    assert "event 2" in body["message"]
    errors = body["errors"]["json"]
    assert list(errors) == ["2"]
    assert words in " ".join(errors["2"][field])
    assert stored_count(engine) == 0


@pytest.mark.parametrize("case,overrides,field,words", BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
def test_fast_validator_and_marshmallow_schema_agree(case, overrides, field, words):
    item = _bad_event(overrides)
    _, fast_errors = rules.validate_events([item], NOW)
    with pytest.raises(ValidationError) as raised:
        EventSchema(many=True).load([item])
    assert fast_errors == raised.value.messages


def test_valid_event_passes_both_validators_with_the_same_result():
    event = make_event(occurred_at="2025-08-01T10:00:00+03:00", properties={"é": "ü", "n": 1.5, "b": True})
    rows, errors = rules.validate_events([event], NOW)
    assert errors == {}
    loaded = EventSchema(many=True).load([event])[0]
    assert rows[0][0] == loaded["event_id"]
    assert rows[0][4] == loaded["properties"]


def _post_raw(client, data: bytes | str, content_type="application/json", **headers):
    return client.post("/events", data=data, headers={"Content-Type": content_type, **headers})


def test_nan_and_infinity_are_refused_naming_the_event(client, engine):
    body = json.dumps([make_event(), make_event()])[:-1] + ', {"event_id": "%s", "occurred_at": "%s", ' \
        '"user_id": "u", "event_type": "t", "properties": {"x": NaN, "y": -Infinity}}]' % (
            make_event()["event_id"], NOW.isoformat())
    response = _post_raw(client, body)
    assert response.status_code == 422
    assert "NaN" in response.get_json()["errors"]["json"]["2"]["properties"][0]
    assert stored_count(engine) == 0


def test_deeply_nested_properties_are_refused_not_crashing(client, engine):
    nested: dict = {}
    cursor = nested
    for _ in range(300):
        cursor["d"] = {}
        cursor = cursor["d"]
    response = client.post("/events", json=[make_event(properties=nested)])
    assert response.status_code == 422
    assert "properties" in response.get_json()["errors"]["json"]["0"]


@pytest.mark.parametrize(
    "data,status,words",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (b'{"event_id": "x"}', 422, "array"),
        (b"[]", 422, "at least one"),
        (b'"hello"', 422, "array"),
    ],
    ids=["garbage", "empty body", "object not array", "empty array", "string"],
)
def test_malformed_bodies(client, engine, data, status, words):
    response = _post_raw(client, data)
    assert response.status_code == status
    assert words in response.get_json()["message"]
    assert stored_count(engine) == 0


def test_wrong_content_type_is_415(client, engine):
    response = _post_raw(client, json.dumps([make_event()]), content_type="text/plain")
    assert response.status_code == 415
    assert "application/json" in response.get_json()["message"]
    assert stored_count(engine) == 0


def test_more_than_10000_events_is_413(client, engine):
    batch = [make_event() for _ in range(10_001)]
    response = client.post("/events", json=batch)
    assert response.status_code == 413
    assert "10000" in response.get_json()["message"]
    assert stored_count(engine) == 0


def test_exactly_10000_events_are_accepted(client, engine):
    response = client.post("/events", json=[make_event() for _ in range(10_000)])
    assert response.status_code == 201
    assert stored_count(engine) == 10_000


def test_body_over_the_limit_is_413(app, client, engine, monkeypatch):
    monkeypatch.setitem(app.config, "EVENTSAPP_MAX_BODY_BYTES", 2000)
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 2000)
    response = client.post("/events", json=[make_event() for _ in range(20)])
    assert response.status_code == 413
    assert stored_count(engine) == 0


def test_gzip_body_is_accepted(client, engine):
    data = gzip.compress(json.dumps([make_event(), make_event()]).encode())
    response = _post_raw(client, data, **{"Content-Encoding": "gzip"})
    assert response.status_code == 201
    assert stored_count(engine) == 2


def test_corrupt_gzip_is_400(client, engine):
    data = gzip.compress(json.dumps([make_event()]).encode())
    response = _post_raw(client, data[:10] + b"garbage" + data[17:], **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "gzip" in response.get_json()["message"]
    truncated = _post_raw(client, data[: len(data) // 2], **{"Content-Encoding": "gzip"})
    assert truncated.status_code == 400
    assert stored_count(engine) == 0


def test_gzip_bomb_is_413_without_inflating_it_all(app, client, engine, monkeypatch):
    monkeypatch.setitem(app.config, "EVENTSAPP_MAX_BODY_BYTES", 1024 * 1024)
    # 200 MB of zeros compress to ~200 KB: far under the body limit, far over it inflated.
    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]", compresslevel=9)
    assert len(bomb) < 1024 * 1024
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    response = _post_raw(client, bomb, **{"Content-Encoding": "gzip"})
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert response.status_code == 413
    assert "inflates" in response.get_json()["message"]
    assert (after - before) < 100 * 1024  # KB: nowhere near the 200 MB it would inflate to


def test_unsupported_content_encoding_is_415(client):
    response = _post_raw(client, json.dumps([make_event()]), **{"Content-Encoding": "br"})
    assert response.status_code == 415


def test_over_long_idempotency_key_is_400(client, engine):
    response = client.post("/events", json=[make_event()], headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["errors"]["headers"]
    assert stored_count(engine) == 0


def test_wrong_method_keeps_allow_header(client):
    response = client.get("/events")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert response.get_json()["code"] == 405


def test_text_that_merely_spells_an_escaped_nul_is_accepted_and_stored(client, engine):
    spelled = "C:\\u0000\\dir"  # a backslash, then the letters u0000: no NUL character
    response = client.post("/events", json=[make_event(properties={"path": spelled, "k\\u0000": 1})])
    assert response.status_code == 201
    with engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT properties FROM events").scalar_one()
    assert stored == {"path": spelled, "k\\u0000": 1}
