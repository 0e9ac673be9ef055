"""Analytics from a read replica, for real: a PostgreSQL primary and a streaming hot standby made with the
machine's PostgreSQL binaries (`pg_basebackup -R`), the app writing to the first and reading /stats/* from
the second. A read sees every write acknowledged before it; a standby that lags answers 503 with
Retry-After, never stale numbers; the standby refuses writes."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy as sa

from conftest import make_event

PG_BIN = Path(os.environ.get("EVENTSAPP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
NEEDED = ("initdb", "pg_ctl", "pg_basebackup")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all((PG_BIN / name).exists() for name in NEEDED),
                       reason=f"PostgreSQL server binaries ({', '.join(NEEDED)}) not found in {PG_BIN} "
                              "(Debian: apt-get install postgresql-15; or set EVENTSAPP_TEST_PG_BIN)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """A primary and a streaming standby in a temporary folder, run as `pgserver` when we are root
    (initdb refuses root; the embedded server runs as that user too)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="eventsapp-test-replica-"))
        self.root.chmod(0o755)
        self.user = "pgserver" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.root, self.user)
        self.primary_port, self.standby_port = _free_port(), _free_port()
        self.started: list[Path] = []

    def run(self, *args: str) -> None:
        result = subprocess.run(args, user=self.user, cwd=self.root, capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self, name: str, port: int) -> None:
        options = f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c shared_buffers=16MB -c fsync=off"
        self.run(str(PG_BIN / "pg_ctl"), "-D", str(self.root / name), "-l", str(self.root / f"{name}.log"),
                 "-o", options, "-w", "-t", "60", "start")
        self.started.append(self.root / name)

    def up(self) -> None:
        self.run(str(PG_BIN / "initdb"), "-D", str(self.root / "primary"), "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--locale=C")
        self.start("primary", self.primary_port)
        self.run(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                 "-D", str(self.root / "standby"), "-R", "-X", "stream", "-c", "fast")
        self.start("standby", self.standby_port)

    def down(self) -> None:
        for data_dir in reversed(self.started):
            try:
                self.run(str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, port: int) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def replica_app(cluster):
    from flask_migrate import upgrade

    from eventsapp import create_app
    from eventsapp.database import MIGRATIONS_DIR
    from eventsapp.extensions import db

    app = create_app({"TESTING": True, "DATABASE_URL": cluster.url(cluster.primary_port),
                      "EVENTSAPP_ANALYTICS_DATABASE_URL": cluster.url(cluster.standby_port),
                      "EVENTSAPP_AUTH": "off", "EVENTSAPP_RATE_LIMIT_INGEST": "1000000/minute",
                      "EVENTSAPP_RATE_LIMIT_STATS": "1000000/minute", "EVENTSAPP_QUERY_TIMEOUT_MS": 5000})
    with app.app_context():
        upgrade(directory=str(MIGRATIONS_DIR))
    yield app
    from eventsapp.database import analytics_engine

    with app.app_context():
        db.engine.dispose()
    analytics_engine(app).dispose()


def _standby(cluster) -> psycopg2.extensions.connection:
    connection = psycopg2.connect(host="127.0.0.1", port=cluster.standby_port, user="postgres", dbname="postgres")
    connection.autocommit = True
    return connection


def _expected_dau(cluster) -> dict[str, int]:
    """Distinct users per UTC date, from the primary's events (plain Python)."""
    users: dict[str, set[str]] = defaultdict(set)
    engine = sa.create_engine(cluster.url(cluster.primary_port))
    with engine.connect() as connection:
        for occurred_at, user_id in connection.exec_driver_sql("SELECT occurred_at, user_id FROM events"):
            users[occurred_at.date().isoformat()].add(user_id)
    engine.dispose()
    return {day: len(ids) for day, ids in users.items()}


def _post(client, count: int, day: str) -> None:
    events = [make_event(occurred_at=f"{day}T{10 + i % 10}:00:00Z", user_id=f"u-{uuid.uuid4().hex[:6]}")
              for i in range(count)]
    response = client.post("/events", json=events)
    assert response.status_code == 201, response.get_json()


def _dau(client) -> tuple[int, dict[str, int], str | None]:
    response = client.get("/stats/dau?from=2025-10-01&to=2025-10-05")
    body = response.get_json()
    rows = {row["date"]: row["dau"] for row in body if row["dau"]} if response.status_code == 200 else {}
    return response.status_code, rows, response.headers.get("Retry-After")


def test_reads_go_to_the_standby_see_every_acknowledged_write_and_never_stale_numbers(cluster, replica_app,
                                                                                        monkeypatch):
    client = replica_app.test_client()
    standby = _standby(cluster)
    with standby.cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        assert cursor.fetchone() == (True,)

    # Read-your-writes: each read right after a write sees it (the write is on the primary only).
    for round_, day in enumerate(("2025-10-01", "2025-10-02", "2025-10-03")):
        _post(client, 20 + round_, day)
        status, rows, _ = _dau(client)
        assert status == 200
        assert rows == _expected_dau(cluster)
        assert rows[day] == 20 + round_

    # The standby stops replaying: writes still succeed on the primary, reads wait (bounded) and answer
    # 503 + Retry-After rather than numbers without the new events.
    with standby.cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_pause()")
    try:
        monkeypatch.setitem(replica_app.config, "EVENTSAPP_QUERY_TIMEOUT_MS", 500)
        _post(client, 7, "2025-10-04")
        assert client.get("/health").status_code == 200
        status, _, retry_after = _dau(client)
        assert (status, retry_after) == (503, "5")
    finally:
        with standby.cursor() as cursor:
            cursor.execute("SELECT pg_wal_replay_resume()")
    monkeypatch.setitem(replica_app.config, "EVENTSAPP_QUERY_TIMEOUT_MS", 30_000)
    status, rows, _ = _dau(client)
    assert status == 200 and rows == _expected_dau(cluster) and rows["2025-10-04"] == 7

    # The fold ran on the primary (nothing can be written on the standby), and the standby refuses writes.
    primary = psycopg2.connect(host="127.0.0.1", port=cluster.primary_port, user="postgres", dbname="postgres")
    with primary, primary.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM rollup_outbox")
        assert cursor.fetchone() == (0,)
    primary.close()
    with standby.cursor() as cursor:
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cursor.execute("INSERT INTO rollup_meta (id, project_tz) VALUES (1, 'UTC') ON CONFLICT DO NOTHING")
        cursor.execute("SELECT sum(users) FROM rollup_dau")  # the replica holds the folded rollups
        assert cursor.fetchone()[0] == sum(_expected_dau(cluster).values())
    standby.close()


def test_other_endpoints_stay_on_the_primary_when_the_standby_is_paused(cluster, replica_app):
    client = replica_app.test_client()
    standby = _standby(cluster)
    with standby.cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_pause()")
    try:
        _post(client, 3, "2025-10-05")
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.get_json() == {"status": "ok", "analytics": "replay paused"}
        assert client.get("/dashboard").status_code == 200
    finally:
        with standby.cursor() as cursor:
            cursor.execute("SELECT pg_wal_replay_resume()")
        standby.close()


def test_a_standby_that_is_down_turns_away_stats_reads_only(cluster, replica_app):
    client = replica_app.test_client()
    assert client.get("/ready").get_json() == {"status": "ok", "analytics": "ok"}
    cluster.run(str(PG_BIN / "pg_ctl"), "-D", str(cluster.root / "standby"), "-m", "fast", "-w", "stop")
    _post(client, 2, "2025-10-05")
    status, _, retry_after = _dau(client)
    assert (status, retry_after) == (503, "5")
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.get_json()["analytics"].startswith("unreachable")
    assert client.get("/health").status_code == 200
