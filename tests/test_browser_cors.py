"""CORS on ingest paths only, per EVENTSAPP_CORS_ORIGINS; pages on other origins are refused."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest

from browser_apps import browser_app
from conftest import stored_count

PAGE = "https://app.example.com"
OTHER = "https://evil.example.net"


@pytest.fixture(scope="module")
def listed(app):
    return browser_app(app, EVENTSAPP_CORS_ORIGINS=(PAGE,)).test_client()


@pytest.fixture(scope="module")
def wildcard(app):
    return browser_app(app, EVENTSAPP_CORS_ORIGINS=("*",)).test_client()


def _event() -> str:
    return json.dumps(
        {
            "api_key": "k",
            "batch": [
                {
                    "event": "clicked",
                    "distinct_id": "u",
                    "uuid": str(uuid.uuid4()),
                    "timestamp": datetime.now(timezone.utc).isoformat(),
                }
            ],
        }
    )


def _preflight(client, path: str, origin: str, headers: str = "content-type"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )


INGEST = ["/e/", "/batch/", "/v1/t", "/v1/batch", "/events", "/flags/?v=2"]
CLOSED = [
    "/stats/dau?from=2025-08-01&to=2025-08-02",
    "/stats/summary?from=2025-08-01&to=2025-08-02",
    "/metrics",
    "/ready",
]


@pytest.mark.parametrize("path", INGEST)
def test_listed_origin_gets_preflight_and_headers_on_ingest_paths(listed, path):
    response = _preflight(listed, path, PAGE, "authorization,x-retry-count,content-type")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


@pytest.mark.parametrize("path", CLOSED)
def test_stats_and_operations_are_never_cors_enabled(listed, wildcard, path):
    for client in (listed, wildcard):
        assert "Access-Control-Allow-Origin" not in _preflight(client, path, PAGE).headers
        assert "Access-Control-Allow-Origin" not in client.get(path, headers={"Origin": PAGE}).headers


def test_listed_origin_stores_and_reads_the_answer(listed, engine):
    response = listed.post("/e/", data=_event(), content_type="text/plain", headers={"Origin": PAGE})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    assert stored_count(engine) == 1


def test_unlisted_origin_is_refused_and_nothing_is_stored(listed, client, engine):
    for app_client in (listed, client):  # the session app lists no origin at all (the default)
        assert "Access-Control-Allow-Origin" not in _preflight(app_client, "/e/", OTHER).headers
        response = app_client.post("/e/", data=_event(), content_type="text/plain", headers={"Origin": OTHER})
        assert response.status_code == 403 and "EVENTSAPP_CORS_ORIGINS" in response.json["message"]
        response = app_client.post(
            "/v1/t",
            data=json.dumps({"userId": "u", "event": "x"}),
            content_type="text/plain",
            headers={"Origin": OTHER},
        )
        assert response.status_code == 403
    assert stored_count(engine) == 0
    # Without Origin (a server SDK, curl) or from the server's own origin, nothing changes.
    assert client.post("/e/", data=_event(), content_type="text/plain").status_code == 200
    assert (
        client.post(
            "/e/", data=_event(), content_type="text/plain", headers={"Origin": "http://localhost"}
        ).status_code
        == 200
    )
    assert stored_count(engine) == 2


def test_wildcard_opens_ingest_paths_to_any_page(wildcard, engine):
    response = wildcard.post("/e/", data=_event(), content_type="text/plain", headers={"Origin": OTHER})
    assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == "*"
    assert _preflight(wildcard, "/v1/p", OTHER).headers["Access-Control-Allow-Origin"] == "*"
    assert stored_count(engine) == 1


def test_sdk_config_answers_and_static_404_carry_cors_headers(listed):
    for path in ("/array/phc_1/config.js", "/array/phc_1/config", "/v1/projects/wk/settings"):
        response = listed.get(path, headers={"Origin": PAGE})
        assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == PAGE
    missing = listed.get("/static/1.449.2/surveys.js", headers={"Origin": PAGE})
    assert missing.status_code == 404 and missing.json["code"] == 404
    assert missing.headers["Access-Control-Allow-Origin"] == PAGE
