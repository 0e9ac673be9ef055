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
    "integrations": _segment_message(messageId='"m-1"', integrations=f'{{"All": true, "x{SURROGATE}": false}}'),
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
    "properties": _posthog_event(uuid=json.dumps(str(uuid.uuid4())), properties=f'{{"$lib": "web{SURROGATE}"}}'),
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
    response = client.post("/v1/track", data=_segment_message(anonymousId=f'"{SURROGATE}"'),
                           content_type="application/json")
    assert response.status_code == 400
    assert "anonymousId" in response.json["errors"]["json"]
    response = client.post("/capture/", data=_posthog_event(distinct_id=f'"{SURROGATE}"'),
                           content_type="application/json")
    assert response.status_code == 400
    assert "distinct_id" in response.json["errors"]["json"]
    assert stored_count(engine) == 0
