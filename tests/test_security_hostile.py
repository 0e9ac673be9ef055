"""Hostile input: SQL injection in every parameter, oversized headers and bodies, deep JSON.

Every answer must be a JSON 4xx (or a normal 2xx where the input is merely odd text), never a 5xx,
and the database must be untouched by anything but the request's own, literal data.
"""

from __future__ import annotations

import socket
import uuid

import pytest
import requests
import sqlalchemy as sa

from conftest import make_event, stored_count
from faultproc import EmbeddedPostgres, ServerProcess

INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE events; --",
    "1; SELECT pg_sleep(5)--",
    "\" OR 1=1 --",
    "x') UNION SELECT key_hash, name FROM api_keys --",
    "$$; DELETE FROM events; $$",
    "properties.plan=' OR 1=1 --",
    "event_type:x' OR 'a'='a",
    "\\'; TRUNCATE events; --",
    "%27%20OR%201%3D1",
]


def tables_intact(engine) -> bool:
    with engine.connect() as connection:
        names = set(sa.inspect(connection).get_table_names())
    return {"events", "api_keys", "processed_keys"} <= names


VALID = {"from": "2026-01-01", "to": "2026-01-31", "start_date": "2026-01-01", "tz": "UTC",
         "step": ["event_type:signup", "event_type:purchase"], "measure": "events"}


def stats_parameters(client) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each /stats path: its query parameters, and a valid value for each required one."""
    spec = client.get("/openapi.json").get_json()
    found = {}
    for path, op in spec["paths"].items():
        if path.startswith("/stats/") and "get" in op:
            params = [p for p in op["get"].get("parameters", []) if p["in"] == "query"]
            found[path] = (
                [p["name"] for p in params],
                {p["name"]: VALID[p["name"]] for p in params if p.get("required")},
            )
    return found


def test_injection_in_every_stats_parameter_is_refused_or_harmless(client, engine):
    client.post("/events", json=[make_event(user_id="victim")])
    parameters = stats_parameters(client)
    assert parameters, "no /stats operations documented"
    for path, (names, required) in parameters.items():
        assert client.get(path, query_string=required).status_code == 200, path
        for name in names:
            for payload in INJECTIONS:
                response = client.get(path, query_string={**required, name: payload})
                assert response.status_code in (200, 400), (path, name, payload, response.status_code)
                assert response.is_json
                if response.status_code == 400:
                    assert name in response.get_json()["errors"]["query"], (path, name, response.get_json())
    assert tables_intact(engine)
    assert stored_count(engine) == 1


def test_injection_in_event_fields_is_stored_literally(client, engine):
    events = [
        make_event(user_id=payload, event_type=payload[:60] or "x", properties={payload: payload})
        for payload in INJECTIONS
    ]
    response = client.post("/events", json=events)
    assert response.status_code == 201, response.get_json()
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT user_id, properties FROM events")).all()
    assert sorted(row.user_id for row in rows) == sorted(INJECTIONS)
    assert all(row.properties == {row.user_id: row.user_id} for row in rows)
    assert tables_intact(engine)


def test_injection_in_ids_and_headers_is_refused(client, engine):
    for payload in INJECTIONS:
        assert client.post("/events", json=[make_event(event_id=payload)]).status_code == 422
        assert client.post("/events", json=[make_event(occurred_at=payload)]).status_code == 422
        response = client.post(
            "/events",
            json=[make_event()],
            headers={
                "Idempotency-Key": payload,
                "X-Request-ID": payload,
                "X-API-Key": payload,
                "Authorization": f"Bearer {payload}",
            },
        )
        assert response.status_code == 201  # auth is off here; odd header text is just text
        assert response.headers["X-Request-ID"] != payload or payload.isalnum()
    assert stored_count(engine) == len(INJECTIONS)
    assert tables_intact(engine)


def test_injected_keys_are_rejected_when_auth_is_on(app, client, engine):
    app.config["EVENTSAPP_AUTH"] = "required"
    try:
        for payload in INJECTIONS:
            for headers in ({"X-API-Key": payload}, {"Authorization": f"Bearer {payload}"}):
                assert client.post("/events", json=[make_event()], headers=headers).status_code == 401
                assert client.get("/stats/dau", headers=headers).status_code == 401
    finally:
        app.config["EVENTSAPP_AUTH"] = "off"
    assert stored_count(engine) == 0


@pytest.mark.parametrize("depth, statuses", [(100, {201}), (1000, {400, 422}), (100_000, {400, 413, 422})])
def test_deeply_nested_properties_get_4xx_not_500(client, engine, depth, statuses):
    nested = '{"a":' * depth + "1" + "}" * depth
    body = (
        '[{"event_id":"%s","occurred_at":"2026-01-01T00:00:00Z","user_id":"u","event_type":"t",'
        '"properties":%s}]' % (uuid.uuid4(), nested)
    )
    response = client.post("/events", data=body, content_type="application/json")
    assert response.status_code in statuses, response.get_json()
    assert response.is_json
    assert stored_count(engine) == (1 if 201 in statuses else 0)


def test_deeply_nested_sdk_payload_gets_4xx(client):
    nested = '{"a":' * 5000 + "1" + "}" * 5000
    body = '{"batch":[{"type":"track","event":"x","userId":"u","messageId":"m","properties":%s}]}' % nested
    response = client.post("/v1/batch", data=body, content_type="application/json")
    assert 400 <= response.status_code < 500


# --- through the real server: waitress limits -----------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hostile")
    pg = EmbeddedPostgres()
    server = ServerProcess(workdir, pg.data_dir, EVENTSAPP_MAX_BODY_BYTES="100000").wait_ready()
    yield server
    server.terminate()
    pg.close()


def test_oversized_headers_are_refused(served):
    response = requests.get(served.url + "/health", headers={"X-Padding": "a" * 100_000}, timeout=30)
    assert response.status_code == 431
    assert requests.get(served.url + "/health", timeout=10).status_code == 200


def test_many_headers_are_refused(served):
    headers = {f"X-H{i}": "v" * 100 for i in range(1000)}
    response = requests.get(served.url + "/health", headers=headers, timeout=30)
    assert response.status_code == 431


def test_oversized_declared_body_is_refused_before_reading(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n["
        )
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]


def test_oversized_body_is_413_json(served):
    body = [make_event(properties={"pad": "x" * 1000}) for _ in range(150)]  # ~190 KB > 100 KB
    response = requests.post(served.url + "/events", json=body, timeout=30)
    assert response.status_code == 413
    assert response.json()["code"] == 413


def test_oversized_chunked_body_is_refused(served):
    def chunks():
        for _ in range(300):
            yield b"[" + b" " * 1000

    response = requests.post(
        served.url + "/events", data=chunks(), timeout=30, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
