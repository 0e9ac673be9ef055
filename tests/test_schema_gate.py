"""A second app in this process on an unmigrated database (and one on a database that is down), auth on.

Until the schema is at head every endpoint that needs it answers 503 with Retry-After 30 and the
`flask db upgrade` hint, whatever the key; /health stays 200 and /ready says why. Building these apps
beside the session's also checks that two apps in one process do not collide (metrics, API spec).
"""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from conftest import make_event
from eventsapp import create_app
from eventsapp.extensions import db


@pytest.fixture
def empty_database(engine):
    name = f"eventsapp_unmigrated_{uuid.uuid4().hex[:8]}"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield engine.url.set(database=name).render_as_string(hide_password=False)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def second_app(database_url: str, auth: str):
    app = create_app({
        "TESTING": True, "DATABASE_URL": database_url, "EVENTSAPP_AUTH": auth,
        "EVENTSAPP_RATE_LIMIT_INGEST": "1000/minute", "EVENTSAPP_RATE_LIMIT_STATS": "1000/minute",
    })
    return app


def dispose(app) -> None:
    with app.app_context():
        db.engine.dispose()


SEGMENT = {"batch": [{"type": "track", "event": "e", "userId": "u", "messageId": "m-1"}]}
POSTHOG = {"batch": [{"event": "e", "distinct_id": "d"}]}


@pytest.mark.parametrize("auth", ["required", "off"])
def test_unmigrated_database_answers_503_on_every_endpoint_in_every_auth_mode(empty_database, auth):
    app = second_app(empty_database, auth)
    client = app.test_client()
    try:
        key = {"X-API-Key": "ea_any-key-at-all"}
        answers = {
            "POST /events with a key": client.post("/events", json=[make_event()], headers=key),
            "POST /events without a key": client.post("/events", json=[make_event()]),
            "GET /stats/dau with a key": client.get("/stats/dau?from=2026-01-01&to=2026-01-02", headers=key),
            "POST /v1/batch with a key": client.post("/v1/batch", json=dict(SEGMENT, writeKey="ea_x")),
            "POST /batch/ with a bearer key": client.post("/batch/", json=POSTHOG,
                                                          headers={"Authorization": "Bearer ea_x"}),
        }
        for name, response in answers.items():
            assert response.status_code == 503, (name, response.status_code, response.get_data(as_text=True))
            assert response.headers["Retry-After"] == "30", name
            assert "flask db upgrade" in response.get_json()["message"], name
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and "flask db upgrade" in ready.get_json()["reason"]
        assert "Retry-After" not in client.get("/health").headers
    finally:
        dispose(app)
    with sa.create_engine(empty_database).connect() as connection:
        assert not sa.inspect(connection).has_table("events")  # nothing was created behind our back


def test_database_down_answers_503_with_the_documented_retry_after():
    # Nothing listens on port 1: every connection attempt fails at once.
    app = second_app("postgresql+psycopg2://eventsapp@127.0.0.1:1/none?connect_timeout=2", "required")
    client = app.test_client()
    try:
        for response in (
            client.post("/events", json=[make_event()], headers={"X-API-Key": "ea_some-key"}),
            client.post("/events", json=[make_event()]),
            client.get("/stats/dau?from=2026-01-01&to=2026-01-02"),
        ):
            assert response.status_code == 503, response.get_data(as_text=True)
            assert response.headers["Retry-After"] == "5"  # README: "503 with Retry-After: 5"
            assert response.get_json()["code"] == 503
        assert client.get("/health").status_code == 200
    finally:
        dispose(app)


def test_session_app_still_answers_after_another_app_was_built(client, empty_database):
    dispose(second_app(empty_database, "off"))
    assert client.post("/events", json=[make_event()]).status_code == 201
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'flask_http_request_duration_seconds_count{endpoint="ingest.post_events",method="POST",status="201"}' \
        in metrics
