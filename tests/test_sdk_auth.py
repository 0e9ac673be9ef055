"""With auth on, the SDKs' own ways of sending a key work, and key problems are 401/403 they don't retry."""
from __future__ import annotations

import base64

import pytest
from posthog import Posthog
from prometheus_client import REGISTRY
from segment.analytics import Client

from conftest import stored_count
from eventsapp.security import auth, keys


@pytest.fixture
def auth_required(app):
    saved = app.config["EVENTSAPP_AUTH"]
    app.config["EVENTSAPP_AUTH"] = "required"
    auth.clear_cache()
    yield app
    app.config["EVENTSAPP_AUTH"] = saved
    auth.clear_cache()


def requests_with_status(sdk: str, status: int) -> float:
    return REGISTRY.get_sample_value("eventsapp_sdk_requests_total", {"sdk": sdk, "status": str(status)}) or 0


def test_segment_write_key_is_an_ingest_key(auth_required, live_server, engine):
    good = keys.create_key(engine, "segment-source", ["ingest"])
    reader = keys.create_key(engine, "reader", ["read"])
    client = Client(good, host=live_server, sync_mode=True)
    client.track(user_id="u", event="with a good key")
    assert stored_count(engine) == 1

    failures = []
    before = requests_with_status("segment", 403)
    client = Client(reader, host=live_server, upload_interval=0.05, max_retries=5,
                    on_error=lambda error, batch: failures.append(error))
    client.track(user_id="u", event="with a read-only key")
    client.flush()
    client.join()
    assert [error.status for error in failures] == [403]
    assert requests_with_status("segment", 403) - before == 1  # dropped, not retried
    assert stored_count(engine) == 1


def test_segment_key_from_body_or_basic_auth_and_missing_key(auth_required, client, engine):
    key = keys.create_key(engine, "segment-http", ["ingest"])
    message = {"type": "track", "event": "e", "userId": "u"}
    assert client.post("/v1/batch", json={"batch": [dict(message, messageId="a")], "writeKey": key}).status_code == 200
    basic = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    assert client.post("/v1/track", json=dict(message, messageId="b"), headers=basic).status_code == 200
    bearer = {"Authorization": f"Bearer {key}"}  # as every other eventsapp endpoint takes it
    assert client.post("/v1/page", json=dict(message, messageId="e"), headers=bearer).status_code == 200
    missing = client.post("/v1/batch", json={"batch": [dict(message, messageId="c")]})
    assert missing.status_code == 401 and missing.get_json()["code"] == 401
    unknown = client.post("/v1/batch", json={"batch": [dict(message, messageId="d")], "writeKey": "nope"})
    assert unknown.status_code == 401
    assert stored_count(engine) == 3


def test_posthog_api_key_token_and_bearer(auth_required, live_server, client, engine):
    key = keys.create_key(engine, "posthog-project", ["ingest"])
    posthog = Posthog(key, host=live_server, sync_mode=True)
    posthog.capture("with api_key", distinct_id="d")
    assert stored_count(engine) == 1

    event = {"event": "e", "distinct_id": "d"}
    assert client.post("/capture/", json=dict(event, token=key, uuid="1b4e28ba-2fa1-41d2-883f-0016d3cca427")
                       ).status_code == 200
    assert client.post("/i/v0/e/", json=dict(event, uuid="2b4e28ba-2fa1-41d2-883f-0016d3cca427"),
                       headers={"Authorization": f"Bearer {key}"}).status_code == 200
    as_posthog_js = [dict(event, uuid="3b4e28ba-2fa1-41d2-883f-0016d3cca427", properties={"token": key})]
    assert client.post("/e/", json=as_posthog_js).status_code == 200
    assert client.post("/e/", json=[dict(event, properties={"token": "wrong"})]).status_code == 401
    assert stored_count(engine) == 4

    failures = []
    before = requests_with_status("posthog", 401)
    posthog = Posthog("phc_unknown", host=live_server, flush_interval=0.05, max_retries=5,
                      on_error=lambda error, batch: failures.append(error))
    posthog.capture("with an unknown key", distinct_id="d")
    posthog.shutdown()
    assert [error.status for error in failures] == [401]
    assert requests_with_status("posthog", 401) - before == 1
    assert stored_count(engine) == 4
