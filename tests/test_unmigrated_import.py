"""An empty DATABASE_URL (issue 12 item 2): `flask import-csv` says to run `flask db upgrade` instead of
"run the same command again", and `python3 dev.py serve` migrates it first and serves the sample data."""
from __future__ import annotations

import contextlib
import csv
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from serverproc import free_port
from test_schema_gate import empty_database  # noqa: F401 - a fixture: a new database, dropped after

REPO = Path(__file__).resolve().parent.parent


def plain_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTSAPP_", "DATABASE_URL"))}
    env.update(extra, PYTHONUNBUFFERED="1")
    return env


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.slow
def test_import_into_an_unmigrated_database_says_run_flask_db_upgrade(empty_database):
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "import-csv", "data/sample_events.csv", "-k", "s1"],
        cwd=REPO, env=plain_env(DATABASE_URL=empty_database), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "run `flask db upgrade`, then this command again" in done.stderr
    assert "run the same command again" not in done.stderr and "Traceback" not in done.stderr
    assert table_names(empty_database) == set()  # nothing was created or written


@pytest.mark.slow
def test_dev_py_serve_with_an_empty_database_url_migrates_it_and_serves_the_sample(empty_database):
    if not (REPO / ".venv" / ".eventsapp-installed").exists():
        pytest.skip("dev.py's .venv is not installed in this checkout")
    port = free_port()
    process = subprocess.Popen([sys.executable, "dev.py", "serve"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT,
                               env=plain_env(DATABASE_URL=empty_database, EVENTSAPP_PORT=str(port)))
    output = b""
    try:
        deadline = time.monotonic() + 180
        while f"127.0.0.1:{port}".encode() not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break
                output += chunk
        assert f"127.0.0.1:{port}".encode() in output, output.decode(errors="replace")
        text = output.decode(errors="replace")
        assert "flask db upgrade" in text and "Traceback" not in text
        summary = requests.get(f"http://127.0.0.1:{port}/stats/summary?from=2025-08-01&to=2025-08-30",
                               timeout=30)
        assert summary.status_code == 200
        # The sample file's events are stored (README's quick start shows them on the dashboard).
        engine = sa.create_engine(empty_database)
        try:
            with engine.connect() as connection:
                stored = connection.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
        finally:
            engine.dispose()
        with (REPO / "data" / "sample_events.csv").open(newline="", encoding="utf-8") as sample:
            assert stored == len({row["event_id"] for row in csv.DictReader(sample)})
        assert summary.json()["events"] > 0
    finally:
        process.terminate()  # dev.py hands SIGTERM on to the server, which stops cleanly
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(60)
        process.kill()  # nothing happens if it has exited
        process.wait()
