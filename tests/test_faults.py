"""The service under faults: the database stopped and started under load, graceful shutdown, slow clients.

These run the app as a real server process (``flask serve``) on an embedded PostgreSQL this test
stops and starts itself, so nothing is mocked: connections really break and really come back.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import requests
import sqlalchemy as sa

from faultproc import EmbeddedPostgres, ServerProcess

BATCH = 40


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    database = EmbeddedPostgres()
    yield database
    database.close()


@pytest.fixture(scope="module")
def server(pg, tmp_path_factory):
    process = ServerProcess(
        tmp_path_factory.mktemp("faults-logs"),
        pg.data_dir,
        EVENTSAPP_CHANNEL_TIMEOUT="2",
        EVENTSAPP_THREADS="6",
    ).wait_ready()
    yield process
    process.terminate()


@pytest.fixture(scope="module")
def db(pg):
    engine = sa.create_engine(pg.uri, pool_pre_ping=True)
    yield engine
    engine.dispose()


def batch_for(tag: str) -> list[dict]:
    at = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    return [
        {
            "event_id": str(uuid.uuid4()),
            "occurred_at": at,
            "user_id": tag,
            "event_type": "fault_test",
            "properties": {"i": i},
        }
        for i in range(BATCH)
    ]


class Writer(threading.Thread):
    """Sends batches one after another; retries a batch (same body) until the server accepts it."""

    def __init__(self, url: str, name: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.tag, self.stop_flag = url, name, stop
        self.statuses: Counter[int | str] = Counter()
        self.acknowledged: list[str] = []
        self.retry_after_missing = 0

    def run(self) -> None:
        session = requests.Session()
        number = 0
        while not self.stop_flag.is_set():
            tag = f"{self.tag}-{number}"
            body = batch_for(tag)
            while True:
                try:
                    response = session.post(self.url + "/events", json=body, timeout=30)
                    status: int | str = response.status_code
                except requests.ConnectionError:
                    status = "connection-error"
                    response = None
                self.statuses[status] += 1
                if status in (200, 201):
                    self.acknowledged.append(tag)
                    break
                if status == 503 and "Retry-After" not in response.headers:
                    self.retry_after_missing += 1
                if status not in (503, "connection-error"):
                    break  # anything else is a failure the test reports
                time.sleep(0.1)
            number += 1


def test_database_stopped_and_restarted_under_load(server, pg, db):
    stop = threading.Event()
    writers = [Writer(server.url, f"w{i}", stop) for i in range(4)]
    for writer in writers:
        writer.start()
    time.sleep(1.5)

    pg.stop()
    try:
        time.sleep(1.0)
        ready = requests.get(server.url + "/ready", timeout=10)
        assert ready.status_code == 503
        assert "unreachable" in ready.json()["reason"]
        refused = requests.post(server.url + "/events", json=batch_for("while-down"), timeout=10)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"].isdigit()
        assert refused.json()["code"] == 503
        time.sleep(1.5)
    finally:
        pg.start()

    # No restart of the app: it must answer again by itself.
    deadline = time.monotonic() + 30
    while requests.get(server.url + "/ready", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "service did not recover after the database came back"
        time.sleep(0.2)
    time.sleep(1.5)
    stop.set()
    for writer in writers:
        writer.join(60)
        assert not writer.is_alive()

    statuses = sum((writer.statuses for writer in writers), Counter())
    assert statuses[503] > 0, statuses  # the outage was seen under load
    assert set(statuses) <= {200, 201, 503, "connection-error"}, statuses
    assert sum(writer.retry_after_missing for writer in writers) == 0
    acknowledged = [tag for writer in writers for tag in writer.acknowledged]
    with db.connect() as connection:
        per_batch = dict(
            connection.execute(
                sa.text(
                    "SELECT user_id, count(*) FROM events WHERE event_type = 'fault_test' GROUP BY user_id"
                )
            ).all()
        )
    # Every acknowledged batch stored exactly once and whole; nothing from the refused one; and no
    # partial batch from the requests cut off when the database went away.
    assert per_batch.get("while-down") is None
    assert {tag: per_batch.get(tag) for tag in acknowledged} == {tag: BATCH for tag in acknowledged}
    assert set(per_batch) == set(acknowledged)
    assert "database unavailable" in server.log()


def test_database_down_log_lines_carry_the_request_id(server, pg):
    pg.stop()
    try:
        response = requests.post(
            server.url + "/events",
            json=batch_for("rid"),
            timeout=10,
            headers={"X-Request-ID": "fault-rid-42"},
        )
        assert response.status_code == 503
        assert response.headers["X-Request-ID"] == "fault-rid-42"
    finally:
        pg.start()
    time.sleep(0.3)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == "fault-rid-42"]
    assert any(line["message"].startswith("database unavailable") for line in mine), mine
    assert any(line["logger"] == "eventsapp.access" and line["status"] == 503 for line in mine), mine


def test_every_endpoint_answers_503_with_retry_after_while_the_database_is_down(server, pg, db):
    segment = {
        "batch": [
            {
                "type": "track",
                "event": "down",
                "userId": "u",
                "messageId": "seg-down-1",
                "timestamp": "2026-01-01T00:00:00Z",
            }
        ],
        "writeKey": "k",
    }
    posthog = {
        "api_key": "k",
        "batch": [
            {
                "event": "down",
                "distinct_id": "u",
                "uuid": str(uuid.uuid4()),
                "timestamp": "2026-01-01T00:00:00Z",
                "properties": {},
            }
        ],
    }
    pg.stop()
    try:
        answers = {
            "POST /events": requests.post(server.url + "/events", json=batch_for("down"), timeout=10),
            "POST /v1/batch": requests.post(server.url + "/v1/batch", json=segment, timeout=10),
            "POST /batch/": requests.post(server.url + "/batch/", json=posthog, timeout=10),
            "GET /stats/dau": requests.get(
                server.url + "/stats/dau", params={"from": "2026-01-01", "to": "2026-01-07"}, timeout=10
            ),
            "GET /ready": requests.get(server.url + "/ready", timeout=10),
        }
    finally:
        pg.start()
    for name, response in answers.items():
        assert response.status_code == 503, (name, response.status_code, response.text[:300])
        if name != "GET /ready":
            assert response.headers["Retry-After"].isdigit(), name
            assert response.json()["code"] == 503, name
    with db.connect() as connection:
        assert (
            connection.execute(sa.text("SELECT count(*) FROM events WHERE event_type = 'down'")).scalar() == 0
        )


def test_slow_client_is_disconnected_after_the_channel_timeout(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        started = time.monotonic()
        # Never finish the headers: the server must hang up on us rather than hold a channel forever.
        data = sock.recv(1024)
        waited = time.monotonic() - started
    assert data == b""
    assert 1.5 <= waited <= 8, waited
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


def test_graceful_shutdown_finishes_in_flight_requests(pg, db, tmp_path):
    process = ServerProcess(tmp_path, pg.data_dir).wait_ready()
    result: dict = {}

    def send() -> None:
        try:
            result["response"] = requests.post(
                process.url + "/events", json=batch_for("in-flight"), timeout=60
            )
        except Exception as exc:  # reported by the assertions below
            result["error"] = exc

    with db.connect() as blocker:
        # Hold the events table so the request is provably still in flight when SIGTERM arrives.
        blocker.execute(sa.text("LOCK TABLE events IN EXCLUSIVE MODE"))
        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 10
        while not blocker.execute(
            sa.text("SELECT count(*) FROM pg_locks WHERE relation = 'events'::regclass AND NOT granted")
        ).scalar():
            assert time.monotonic() < deadline, "the request never reached the database"
            time.sleep(0.05)
        process.process.send_signal(15)
        time.sleep(1.0)
        assert process.process.poll() is None, "server exited with a request in flight"
        with pytest.raises(requests.ConnectionError):
            requests.get(process.url + "/health", timeout=2)  # no new connections while draining
        blocker.rollback()  # release the lock
    sender.join(30)
    assert "error" not in result, result
    assert result["response"].status_code == 201
    assert process.terminate(timeout=30) == 0
    with db.connect() as connection:
        assert (
            connection.execute(sa.text("SELECT count(*) FROM events WHERE user_id = 'in-flight'")).scalar()
            == BATCH
        )
    assert "finishing in-flight requests" in process.log()


def test_a_repeated_sigterm_does_not_kill_the_server_on_its_way_out(pg, tmp_path):
    # Supervisors repeat SIGTERM (docker stop, systemd, an impatient Ctrl-C); once draining has begun the
    # server must still exit by itself with 0, not die by signal halfway through exit.
    process = ServerProcess(tmp_path, pg.data_dir).wait_ready()
    deadline = time.monotonic() + 30
    while process.process.poll() is None:
        assert time.monotonic() < deadline, "server did not exit:\n" + process.log()
        process.process.send_signal(15)
        time.sleep(0.002)
    assert process.terminate() == 0, process.log()
    assert "stopped" in process.log()
