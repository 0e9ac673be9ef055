"""API keys, scopes and rate limits, against the real database and the real Flask-Limiter."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest
import sqlalchemy as sa

from conftest import make_event, stored_count
from eventsapp.security import auth, keys, policy
from eventsapp.security.limits import limiter


@pytest.fixture
def auth_on(app):
    """Turn auth on for one test (the session app runs with it off) and restore everything after."""
    saved = {
        name: app.config[name]
        for name in (
            "EVENTSAPP_AUTH",
            "EVENTSAPP_METRICS_AUTH",
            "EVENTSAPP_KEY_CACHE_SECONDS",
            "EVENTSAPP_RATE_LIMIT_INGEST",
            "EVENTSAPP_RATE_LIMIT_STATS",
            "EVENTSAPP_RATE_LIMIT_AUTH_FAILURES",
        )
    }
    app.config["EVENTSAPP_AUTH"] = "required"
    auth.clear_cache()
    limiter.reset()
    yield app
    app.config.update(saved)
    auth.clear_cache()
    limiter.reset()


def new_key(engine, name, *scopes):
    return keys.create_key(engine, name, list(scopes))


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_missing_key_is_401_json_and_nothing_is_stored(auth_on, client, engine):
    response = client.post("/events", json=[make_event()])
    assert response.status_code == 401
    body = response.get_json()
    assert body["code"] == 401 and "API key required" in body["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert stored_count(engine) == 0


def test_unknown_and_malformed_keys_are_401(auth_on, client, engine):
    new_key(engine, "real", "ingest")
    for headers in (
        bearer("ea_not-a-real-key"),
        {"X-API-Key": "nope"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ):
        response = client.post("/events", json=[make_event()], headers=headers)
        assert response.status_code == 401, headers
        assert response.get_json()["code"] == 401
    assert stored_count(engine) == 0


def test_wrong_scope_is_403_and_nothing_is_stored(auth_on, client, engine):
    read_only = new_key(engine, "dashboard-reader", "read")
    response = client.post("/events", json=[make_event()], headers=bearer(read_only))
    assert response.status_code == 403
    assert "'ingest' scope" in response.get_json()["message"]
    assert stored_count(engine) == 0


def test_ingest_key_works_as_bearer_and_as_x_api_key(auth_on, client, engine):
    key = new_key(engine, "collector", "ingest")
    assert client.post("/events", json=[make_event()], headers=bearer(key)).status_code == 201
    assert client.post("/events", json=[make_event()], headers={"X-API-Key": key}).status_code == 201
    assert stored_count(engine) == 2


def test_admin_scope_can_do_everything(auth_on, client, engine):
    key = new_key(engine, "ops", "admin")
    assert client.post("/events", json=[make_event()], headers=bearer(key)).status_code == 201


def test_only_a_hash_of_the_key_is_stored(auth_on, engine):
    key = new_key(engine, "hashed", "ingest")
    with engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT key_hash FROM api_keys WHERE name = 'hashed'")
        ).scalar_one()
        dump = connection.execute(sa.text("SELECT row_to_json(api_keys)::text FROM api_keys")).scalar_one()
    assert stored == hashlib.sha256(key.encode()).hexdigest()
    assert key not in dump and key.removeprefix("ea_") not in dump
    assert len(key) >= 40  # 32 random bytes, base64url


def test_key_lifecycle_through_the_cli(auth_on, client, runner, engine):
    created = runner.invoke(
        args=["keys", "create", "--name", "ci-bot", "--scope", "ingest", "--scope", "read"]
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("ea_")
    assert client.post("/events", json=[make_event()], headers=bearer(key)).status_code == 201

    listed = runner.invoke(args=["keys", "list"])
    assert listed.exit_code == 0
    assert "ci-bot" in listed.output and "ingest,read" in listed.output and "active" in listed.output
    assert key not in listed.output and key[3:20] not in listed.output

    duplicate = runner.invoke(args=["keys", "create", "--name", "ci-bot", "--scope", "ingest"])
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output

    revoked = runner.invoke(args=["keys", "revoke", "ci-bot"])
    assert revoked.exit_code == 0, revoked.output
    response = client.post("/events", json=[make_event()], headers=bearer(key))
    assert response.status_code == 401
    assert stored_count(engine) == 1
    assert "revoked" in runner.invoke(args=["keys", "list"]).output
    again = runner.invoke(args=["keys", "revoke", "ci-bot"])
    assert again.exit_code != 0 and "No active key" in again.output


def test_cli_refuses_bad_scope_and_bad_name(auth_on, runner):
    bad_scope = runner.invoke(args=["keys", "create", "--name", "x", "--scope", "write"])
    assert bad_scope.exit_code != 0 and "write" in bad_scope.output
    bad_name = runner.invoke(args=["keys", "create", "--name", "has space", "--scope", "read"])
    assert bad_name.exit_code != 0 and "Key name" in bad_name.output


def test_revoke_from_another_process_takes_effect_within_the_cache_window(auth_on, app, client, engine,
                                                                          monkeypatch):
    app.config["EVENTSAPP_KEY_CACHE_SECONDS"] = 1
    key = new_key(engine, "short-lived", "ingest")
    assert client.post("/events", json=[make_event()], headers=bearer(key)).status_code == 201
    # Revoking through the service (as `flask keys revoke` in another process would) leaves this
    # process's cache alone: the key still works inside the window, and stops once it has passed.
    assert keys.revoke_key(engine, "short-lived")
    assert client.post("/events", json=[make_event()], headers=bearer(key)).status_code == 201
    monkeypatch.setattr(auth._cache, "clock", lambda: time.monotonic() + 1.01)  # the window has passed
    assert client.post("/events", json=[make_event()], headers=bearer(key)).status_code == 401


def test_open_endpoints_need_no_key(auth_on, client):
    for path in ("/health", "/ready", "/openapi.json", "/docs", "/metrics"):
        assert client.get(path).status_code == 200, path
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200


def test_metrics_can_be_closed_by_config(auth_on, app, client, engine):
    app.config["EVENTSAPP_METRICS_AUTH"] = "required"
    assert client.get("/metrics").status_code == 401
    ingest_only = new_key(engine, "writer", "ingest")
    assert client.get("/metrics", headers=bearer(ingest_only)).status_code == 403
    reader = new_key(engine, "prometheus", "read")
    assert client.get("/metrics", headers=bearer(reader)).status_code == 200


def test_stats_endpoints_need_the_read_scope(auth_on, app, client, engine):
    rules = [
        rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("stats.") and "GET" in rule.methods and not rule.arguments
    ]
    if not rules:
        pytest.skip("the stats blueprint is not registered in this tree yet")
    writer = new_key(engine, "writer", "ingest")
    reader = new_key(engine, "reader", "read")
    for rule in rules:
        assert client.get(rule.rule).status_code == 401, rule.rule
        assert client.get(rule.rule, headers=bearer(writer)).status_code == 403, rule.rule
        assert client.get(rule.rule, headers=bearer(reader)).status_code not in (401, 403), rule.rule


def test_scope_table_closes_unmapped_blueprints():
    assert auth.required_scope("ingest.post_events", "ingest") == "ingest"
    assert auth.required_scope("stats.dau", "stats") == "read"
    assert auth.required_scope("health.ready", "health") is None
    assert auth.required_scope("someone_new.thing", "someone_new") == "admin"
    assert auth.required_scope(None, None) is None


def test_authenticate_for_sdk_endpoints(auth_on, app, engine):
    key = new_key(engine, "segment-writer", "ingest")
    reader = new_key(engine, "reader", "read")
    from eventsapp.errors import ApiError
    from eventsapp.security import authenticate

    with app.test_request_context("/v1/batch", method="POST"):
        assert authenticate(key, "ingest").name == "segment-writer"
        with pytest.raises(ApiError) as missing:
            authenticate(None, "ingest")
        assert missing.value.status_code == 401
        with pytest.raises(ApiError) as wrong:
            authenticate(reader, "ingest")
        assert wrong.value.status_code == 403
    app.config["EVENTSAPP_AUTH"] = "off"
    with app.test_request_context("/v1/batch", method="POST"):
        assert authenticate(None, "ingest").anonymous


# --- rate limits ---------------------------------------------------------------------------------


def test_rate_limit_is_per_key_with_retry_after_and_json(auth_on, app, client, engine):
    app.config["EVENTSAPP_RATE_LIMIT_INGEST"] = "3/minute"
    first, second = new_key(engine, "first", "ingest"), new_key(engine, "second", "ingest")
    for _ in range(3):
        assert client.post("/events", json=[make_event()], headers=bearer(first)).status_code == 201
    refused = client.post("/events", json=[make_event()], headers=bearer(first))
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    body = refused.get_json()
    assert body["code"] == 429 and "Rate limit exceeded" in body["message"]
    assert refused.headers["X-RateLimit-Limit"] == "3"
    # Another key has its own budget; the refused batch was not stored.
    assert client.post("/events", json=[make_event()], headers=bearer(second)).status_code == 201
    assert stored_count(engine) == 4


def test_rate_limit_per_ip_when_auth_is_off(auth_on, app, client):
    app.config["EVENTSAPP_AUTH"] = "off"
    app.config["EVENTSAPP_RATE_LIMIT_INGEST"] = "2/minute"
    a = {"REMOTE_ADDR": "10.0.0.1"}
    b = {"REMOTE_ADDR": "10.0.0.2"}
    assert client.post("/events", json=[make_event()], environ_base=a).status_code == 201
    assert client.post("/events", json=[make_event()], environ_base=a).status_code == 201
    assert client.post("/events", json=[make_event()], environ_base=a).status_code == 429
    assert client.post("/events", json=[make_event()], environ_base=b).status_code == 201


def test_rate_limit_rejections_are_counted_in_metrics(auth_on, app, client):
    app.config["EVENTSAPP_AUTH"] = "off"
    app.config["EVENTSAPP_RATE_LIMIT_INGEST"] = "1/minute"

    def rejected() -> float:
        text = client.get("/metrics").get_data(as_text=True)
        line = next(
            (l for l in text.splitlines() if l.startswith('eventsapp_rate_limited_total{budget="ingest"}')),
            None,
        )
        return float(line.split()[-1]) if line else 0.0

    before = rejected()
    client.post("/events", json=[make_event()])
    assert client.post("/events", json=[make_event()]).status_code == 429
    assert rejected() == before + 1


def test_unauthenticated_requests_do_not_spend_a_keys_budget(auth_on, app, client, engine):
    app.config["EVENTSAPP_RATE_LIMIT_INGEST"] = "2/minute"
    key = new_key(engine, "k", "ingest")
    for _ in range(5):
        assert client.post("/events", json=[make_event()]).status_code == 401
    assert client.post("/events", json=[make_event()], headers=bearer(key)).status_code == 201


def test_openapi_documents_the_key_schemes_and_error_answers(client):
    spec = client.get("/openapi.json").get_json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer KEY",
    }
    assert schemes["apiKeyHeader"]["in"] == "header" and schemes["apiKeyHeader"]["name"] == "X-API-Key"
    post = spec["paths"]["/events"]["post"]
    assert {"bearerAuth": []} in post["security"]
    for status in ("401", "403", "429"):
        assert status in post["responses"], status
    assert "Retry-After" in post["responses"]["429"]["headers"]
    assert "security" not in spec["paths"]["/health"]["get"]
    assert "401" not in spec["paths"]["/health"]["get"]["responses"]


def segment_batch(key=None):
    body = {"batch": [{"type": "track", "event": "e", "userId": "u", "messageId": str(uuid.uuid4())}]}
    if key:
        body["writeKey"] = key
    return body


def test_posthog_body_key_spends_its_own_budget_not_the_ips(auth_on, app, client, engine):
    app.config["EVENTSAPP_RATE_LIMIT_INGEST"] = "1/minute"
    first, second = new_key(engine, "ph-one", "ingest"), new_key(engine, "ph-two", "ingest")
    event = {"event": "e", "distinct_id": "d"}
    assert client.post("/capture/", json=dict(event, api_key=first, uuid=str(uuid.uuid4()))).status_code == 200
    # Same client IP, another key: its own budget.
    assert client.post("/capture/", json=dict(event, api_key=second, uuid=str(uuid.uuid4()))).status_code == 200
    refused = client.post("/capture/", json=dict(event, api_key=first, uuid=str(uuid.uuid4())))
    assert refused.status_code == 429 and refused.headers["X-RateLimit-Limit"] == "1"
    assert stored_count(engine) == 2


def test_a_second_key_in_a_header_neither_opens_a_budget_nor_escapes_one(auth_on, app, client, engine):
    app.config["EVENTSAPP_RATE_LIMIT_INGEST"] = "2/minute"
    body_key = new_key(engine, "segment-body", "ingest")
    others = [new_key(engine, f"other-{i}", "ingest") for i in range(3)]
    # Each request names two keys: one identity per request, so it is refused (free), and no budget
    # of another key is spent or opened.
    for other in others:
        response = client.post("/v1/batch", json=segment_batch(body_key), headers={"X-API-Key": other})
        assert response.status_code == 401 and "two different API keys" in response.get_json()["message"]
    statuses = [client.post("/v1/batch", json=segment_batch(body_key)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert client.post("/events", json=[make_event()], headers=bearer(others[0])).status_code == 201
    assert stored_count(engine) == 3


def test_sdk_refusals_do_not_spend_the_ingest_budget(auth_on, app, client, engine):
    app.config["EVENTSAPP_RATE_LIMIT_INGEST"] = "2/minute"
    key = new_key(engine, "segment-writer", "ingest")
    reader = new_key(engine, "reader", "read")
    for _ in range(3):
        assert client.post("/v1/batch", json=segment_batch("ea_unknown")).status_code == 401
        assert client.post("/v1/batch", json=segment_batch(reader)).status_code == 403
        assert client.post("/v1/batch", json=segment_batch()).status_code == 401
    statuses = [client.post("/v1/batch", json=segment_batch(key)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_unknown_keys_sent_to_sdk_endpoints_are_counted_as_auth_failures(auth_on, app, client, engine):
    app.config["EVENTSAPP_RATE_LIMIT_AUTH_FAILURES"] = "3/minute"
    good = new_key(engine, "good-sdk", "ingest")
    scanner = {"REMOTE_ADDR": "10.8.8.8"}
    guesses = [
        # an unknown key in X-API-Key beside a valid body key, as Bearer, in the body, as Basic auth
        dict(json=segment_batch(good), headers={"X-API-Key": "ea_guess-1"}),
        dict(json=segment_batch(), headers=bearer("ea_guess-2")),
        dict(json=segment_batch("ea_guess-3")),
    ]
    for guess in guesses:
        assert client.post("/v1/batch", environ_base=scanner, **guess).status_code == 401
    refused = client.post("/v1/batch", json=segment_batch(good), environ_base=scanner)
    assert refused.status_code == 429 and "unknown API keys" in refused.get_json()["message"]
    assert client.post("/v1/batch", json=segment_batch(good), environ_base={"REMOTE_ADDR": "10.8.8.9"}
                       ).status_code == 200


def test_retry_after_only_on_429_and_503(auth_on, app, client, engine):
    app.config["EVENTSAPP_RATE_LIMIT_INGEST"] = "3/minute"
    app.config["EVENTSAPP_RATE_LIMIT_STATS"] = "3/minute"
    key = new_key(engine, "everything", "admin")
    batch = [make_event()]
    answers = [
        client.post("/events", json=batch, headers=bearer(key)),  # 201
        client.post("/events", json=batch, headers=bearer(key)),  # 200
        client.post("/events", data="nope", content_type="application/json", headers=bearer(key)),  # 400
        client.get("/stats/dau?from=2026-01-01&to=2026-01-02", headers=bearer(key)),  # 200
        client.get("/stats/dau?from=nope", headers=bearer(key)),  # 400
        client.post("/events", json=batch),  # 401
        client.get("/health"),
    ]
    assert [answer.status_code for answer in answers] == [201, 200, 400, 200, 400, 401, 200]
    for answer in answers:
        assert "Retry-After" not in answer.headers, (answer.status_code, dict(answer.headers))
    refused = client.post("/events", json=batch, headers=bearer(key))
    assert refused.status_code == 429
    # The window is a minute and its first request was just now.
    assert 55 <= int(refused.headers["Retry-After"]) <= 60


def test_serve_says_how_to_create_a_key_when_none_exists(auth_on, app, engine, caplog):
    import logging

    from eventsapp.serving import _warn_if_no_keys

    caplog.set_level(logging.WARNING, logger="eventsapp.serving")
    _warn_if_no_keys(app)
    assert "flask keys create" in caplog.text
    caplog.clear()
    new_key(engine, "first", "read")
    _warn_if_no_keys(app)
    assert "flask keys create" not in caplog.text


def test_every_registered_route_is_in_the_scope_table(app):
    # A route falling through to the admin-only default is closed by accident: map its blueprint.
    with app.test_request_context():
        unmapped = []
        for rule in app.url_map.iter_rules():
            blueprint = rule.endpoint.rpartition(".")[0] or None
            if blueprint is not None and blueprint not in policy.BLUEPRINTS:
                unmapped.append(rule.rule)
            elif blueprint is None and auth.required_scope(rule.endpoint, blueprint) == auth.UNMAPPED_SCOPE:
                unmapped.append(rule.rule)
    assert unmapped == []


def test_too_many_unknown_keys_from_one_address_get_429(auth_on, app, client, engine):
    app.config["EVENTSAPP_RATE_LIMIT_AUTH_FAILURES"] = "3/minute"
    good = new_key(engine, "good", "ingest")
    scanner, other = {"REMOTE_ADDR": "10.9.9.9"}, {"REMOTE_ADDR": "10.9.9.10"}
    try:
        for attempt in range(3):
            assert (
                client.post(
                    "/events", json=[make_event()], headers=bearer(f"guess-{attempt}"), environ_base=scanner
                ).status_code
                == 401
            )
        refused = client.post("/events", json=[make_event()], headers=bearer(good), environ_base=scanner)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"].isdigit()
        assert "unknown API keys" in refused.get_json()["message"]
        # Other addresses are unaffected, and a missing key costs nothing.
        assert (
            client.post("/events", json=[make_event()], headers=bearer(good), environ_base=other).status_code
            == 201
        )
        for _ in range(5):
            assert client.post("/events", json=[make_event()], environ_base=other).status_code == 401
    finally:
        app.config["EVENTSAPP_RATE_LIMIT_AUTH_FAILURES"] = "1000000/minute"
