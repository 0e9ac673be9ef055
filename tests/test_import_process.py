"""``flask import-csv`` as a real process: kill -9, Ctrl-C or the database lost mid-way, progress on a
terminal or a pipe, and an import while the server runs on the same embedded data folder."""
from __future__ import annotations

import csv
import os
import select
import shutil
import socket
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
import requests

from conftest import stored_count
from faultproc import EmbeddedPostgres
from eventsapp.importer.service import APPLICATION_NAME

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from data.generate_events import generate_rows, write_csv  # noqa: E402


def cli_env(app, **extra: str) -> dict[str, str]:
    """The environment of a CLI process that uses the tests' database."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    if not os.environ.get("DATABASE_URL"):
        env["EVENTSAPP_DATA_DIR"] = str(app.config["EVENTSAPP_DATA_DIR"])
    return env


def import_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "import-csv", *args]


def make_file(path: Path, rows: int, seed: int = 7) -> set[str]:
    with path.open("w", encoding="utf-8", newline="") as out:
        write_csv(out, generate_rows(rows, seed=seed))
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["event_id"] for row in csv.DictReader(handle)}


def distinct_ids_stored(engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.exec_driver_sql("SELECT event_id::text FROM events").scalars())


def wait_for_sessions_to_end(engine, timeout: float = 30) -> None:
    """Wait until the killed import's database sessions are gone: a COMMIT it sent just before it died
    still completes, so counting rows earlier would miss that batch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if not connection.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %(name)s",
                    {"name": APPLICATION_NAME}).scalar_one():
                return
        time.sleep(0.05)
    raise TimeoutError("the import's sessions did not end")


def wait_for_rows(engine, process: subprocess.Popen, minimum: int = 1, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = stored_count(engine)
        if count >= minimum:
            return count
        assert process.poll() is None, "the import finished before it could be interrupted"
        time.sleep(0.05)
    raise TimeoutError("no batch was committed")


@pytest.mark.parametrize("how", ["kill -9", "Ctrl-C"])
def test_interrupted_import_then_rerun_stores_each_event_exactly_once(app, engine, tmp_path, how):
    source = tmp_path / "big.csv"
    ids = make_file(source, 60_000)
    args = import_command(str(source), "-k", "big", "--batch-size", "1000")
    process = subprocess.Popen(args, cwd=REPO, env=cli_env(app), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        wait_for_rows(engine, process)
        process.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    wait_for_sessions_to_end(engine)
    before = stored_count(engine)
    if how == "Ctrl-C":
        assert process.returncode == 130, err.decode()
        assert "Interrupted" in err.decode() and "run the same command again" in err.decode()
    else:
        assert process.returncode == -signal.SIGKILL
    assert 0 < before < len(ids)
    with engine.connect() as connection:  # the key is stored only by a finished import
        assert connection.exec_driver_sql("SELECT count(*) FROM processed_keys").scalar_one() == 0

    rerun = subprocess.run(args, cwd=REPO, env=cli_env(app), capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert distinct_ids_stored(engine) == ids
    summary = rerun.stdout.decode()
    inserted = len(ids) - before
    assert f"60,000 rows read, {inserted:,} inserted, {60_000 - inserted:,} duplicates" in summary


def test_progress_bar_on_a_terminal_not_in_a_pipe(app, tmp_path):
    source = tmp_path / "events.csv"
    make_file(source, 20_000)
    master, slave = os.openpty()
    process = subprocess.Popen(import_command(str(source), "--batch-size", "500"), cwd=REPO, env=cli_env(app),
                               stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    terminal = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        terminal += chunk
    os.close(master)
    out = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 0, terminal.decode(errors="replace")
    text = terminal.decode(errors="replace")
    assert "\r" in text and "rows/s" in text and "ETA" in text and "%" in text
    assert "20,000 rows read" in out

    piped = subprocess.run(import_command(str(source), "--batch-size", "500"), cwd=REPO, env=cli_env(app),
                           capture_output=True, timeout=120)
    assert piped.returncode == 0
    assert b"\r" not in piped.stderr and b"ETA" not in piped.stderr
    assert b"20,000 rows read, 0 inserted, 20,000 duplicates" in piped.stdout

    quiet = subprocess.run(import_command(str(source), "--quiet"), cwd=REPO, env=cli_env(app),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    assert b"ETA" not in quiet.stderr


@pytest.fixture
def own_folder():
    """A folder outside pytest's tmp tree: pytest resets that tree to 0700 when other sessions start,
    which locks out the embedded server's OS user."""
    folder = Path(tempfile.mkdtemp(prefix="eventsapp-import-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_import_while_the_server_runs_on_the_same_embedded_folder(own_folder):
    data_dir = own_folder / "pgdata"
    source = own_folder / "events.csv"
    ids = make_file(source, 5_000, seed=11)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(EVENTSAPP_DATA_DIR=str(data_dir), EVENTSAPP_AUTH="off", PYTHONUNBUFFERED="1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = (own_folder / "server.log").open("wb")
    waitress = str(Path(sys.executable).parent / "waitress-serve")
    server = subprocess.Popen([waitress, f"--listen=127.0.0.1:{port}", "wsgi:app"], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (own_folder / "server.log").read_text()
            try:
                if requests.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.2)
        result = subprocess.run(import_command(str(source), "--batch-size", "1000", "-k", "shared"),
                                cwd=REPO, env=env, capture_output=True, timeout=300)
        assert result.returncode == 0, result.stderr.decode()
        assert f"{len(ids):,} inserted" in result.stdout.decode()
        # The server is still up after the CLI left, and it sees the imported events.
        with source.open(newline="", encoding="utf-8") as handle:
            first = next(csv.DictReader(handle))
        event = {name: first[name] for name in ("event_id", "occurred_at", "user_id", "event_type")}
        event["properties"] = orjson.loads(first["properties_json"])
        response = requests.post(url + "/events", json=[event], timeout=30)
        assert response.status_code == 200, response.text
        assert response.json() == {"ingested": 0, "duplicates": 1}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_database_lost_mid_way_then_rerun_completes(own_folder):
    pg = EmbeddedPostgres()
    try:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update(EVENTSAPP_DATA_DIR=str(pg.data_dir), PYTHONUNBUFFERED="1")
        source = own_folder / "events.csv"
        ids = make_file(source, 60_000, seed=5)
        args = import_command(str(source), "--batch-size", "1000", "-k", "lost")
        engine = sa.create_engine(pg.uri, poolclass=sa.pool.NullPool)
        process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while True:  # the first run also migrates the fresh folder
                try:
                    if stored_count(engine) > 0:
                        break
                except Exception:  # noqa: BLE001 - schema not there yet
                    pass
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()
                time.sleep(0.05)
            pg.stop()
            out, err = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 1, err.decode()
        assert "Database error" in err.decode() and "run the same command again" in err.decode()
        pg.start()
        rerun = subprocess.run(args, cwd=REPO, env=env, capture_output=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr.decode()
        with engine.connect() as connection:
            stored = set(connection.exec_driver_sql("SELECT event_id::text FROM events").scalars())
            keys = connection.exec_driver_sql(
                "SELECT count(*) FROM processed_keys WHERE kind = 'import'").scalar()
        assert stored == ids and keys == 1
        engine.dispose()
    finally:
        pg.close()
