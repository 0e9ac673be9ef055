"""Browser-safe keys: ingest only, only on the endpoints a page uses, only from listed origins, and
rate-limited per client IP as well as per key."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest

from browser_apps import browser_app
from conftest import make_event, stored_count
from eventsapp.security import auth, keys

PAGE = "https://app.example.com"


@pytest.fixture(scope="module")
def web_app(app):
    """Auth on, pages of any origin allowed by CORS: what is left to refuse is the key's own business."""
    return browser_app(app, EVENTSAPP_CORS_ORIGINS=("*",), EVENTSAPP_AUTH="required")


@pytest.fixture
def web(web_app, engine):
    auth.clear_cache()
    saved = {
        name: web_app.config[name] for name in ("EVENTSAPP_RATE_LIMIT_BROWSER_IP", "RATELIMIT_KEY_PREFIX")
    }
    web_app.config["RATELIMIT_KEY_PREFIX"] = f"test-{uuid.uuid4()}"  # fresh counters for this test
    yield web_app.test_client()
    web_app.config.update(saved)
    auth.clear_cache()


def _posthog(key: str) -> str:
    return json.dumps(
        {
            "api_key": key,
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


def _segment(key: str) -> str:
    return json.dumps(
        {"writeKey": key, "type": "track", "event": "Clicked", "userId": "u", "messageId": str(uuid.uuid4())}
    )


def test_cli_creates_browser_keys_and_refuses_other_scopes(runner, engine):
    result = runner.invoke(
        args=[
            "keys",
            "create",
            "--name",
            "web",
            "--scope",
            "ingest",
            "--browser",
            "--origin",
            "https://App.example.com/",
            "--origin",
            "http://localhost:3000",
        ]
    )
    assert result.exit_code == 0, result.output
    identity = keys.find_key(engine, result.stdout.strip().splitlines()[0])
    assert identity.browser and identity.origins == {"https://app.example.com", "http://localhost:3000"}
    listing = runner.invoke(args=["keys", "list"]).output
    assert "browser (https://app.example.com http://localhost:3000)" in listing

    for args in (
        ["--scope", "read", "--browser"],
        ["--scope", "ingest", "--scope", "admin", "--browser"],
        ["--scope", "ingest", "--origin", PAGE],
        ["--scope", "ingest", "--browser", "--origin", "app.example.com"],
    ):
        result = runner.invoke(args=["keys", "create", "--name", "bad", *args])
        assert result.exit_code != 0 and "Error" in result.output, args
    assert [info.name for info in keys.list_keys(engine)] == ["web"]


def test_browser_key_sends_from_its_origins_only(web, web_app, engine):
    key = keys.create_key(engine, "web", ["ingest"], browser=True, origins=[PAGE])
    ok = {"Origin": PAGE}
    assert web.post("/e/", data=_posthog(key), content_type="text/plain", headers=ok).status_code == 200
    assert web.post("/v1/t", data=_segment(key), content_type="text/plain", headers=ok).status_code == 200
    assert web.post("/events", json=[make_event()], headers={**ok, "X-API-Key": key}).status_code == 201
    assert stored_count(engine) == 3

    for headers in (
        {"Origin": "https://evil.example.net"},
        {},
    ):  # another site's page; a script without Origin
        response = web.post("/e/", data=_posthog(key), content_type="text/plain", headers=headers)
        assert response.status_code == 403 and "origin" in response.json["message"]
    assert stored_count(engine) == 3


def test_browser_key_is_refused_everywhere_but_ingest(web, web_app, engine):
    key = keys.create_key(engine, "web", ["ingest"], browser=True)  # no origin list: any page
    headers = {"Origin": PAGE, "Authorization": f"Bearer {key}"}
    assert (
        web.post(
            "/e/",
            data=_posthog(key),
            content_type="text/plain",
            headers={"Origin": "https://any.example.org"},
        ).status_code
        == 200
    )
    for path in ("/stats/dau?from=2025-08-01&to=2025-08-02", "/stats/summary?from=2025-08-01&to=2025-08-02"):
        response = web.get(path, headers=headers)
        assert response.status_code == 403 and "browser key" in response.json["message"]
    # A server key with the same scope is not limited that way.
    server_key = keys.create_key(engine, "backend", ["ingest", "read"])
    assert (
        web.get(
            "/stats/summary?from=2025-08-01&to=2025-08-02", headers={"Authorization": f"Bearer {server_key}"}
        ).status_code
        == 200
    )


def test_browser_keys_are_rate_limited_per_client_ip_too(web, web_app, engine):
    web_app.config["EVENTSAPP_RATE_LIMIT_BROWSER_IP"] = "3/minute"
    first = keys.create_key(engine, "web-1", ["ingest"], browser=True)
    second = keys.create_key(engine, "web-2", ["ingest"], browser=True)
    server = keys.create_key(engine, "backend", ["ingest"])
    statuses = [
        web.post("/e/", data=_posthog(key), content_type="text/plain", headers={"Origin": PAGE}).status_code
        for key in (first, second, first, second)
    ]
    assert statuses == [200, 200, 200, 429]  # two keys, one client: one per-IP budget
    assert web.post(
        "/e/", data=_posthog(second), content_type="text/plain", headers={"Origin": PAGE}
    ).headers["Retry-After"]
    # Server keys from the same address are not charged to that budget.
    assert web.post("/e/", data=_posthog(server), content_type="text/plain").status_code == 200
    assert stored_count(engine) == 4
