"""Test fixtures: one app per session on a real PostgreSQL, emptied before each test.

With DATABASE_URL set, tests use that server (migrated here); otherwise an embedded PostgreSQL in a
fresh temporary folder.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import psycopg2.errors
import pytest
import sqlalchemy as sa

from eventsapp import create_app
from eventsapp.extensions import db
from eventsapp.models import metadata
from eventsapp.stats.rollups import FOLD_LOCK_KEY


@pytest.fixture(scope="session")
def app(tmp_path_factory):
    config: dict[str, Any] = {"TESTING": True}
    # Most tests run unauthenticated and unthrottled; tests/test_security*.py switch these on per test.
    config.update({"EVENTSAPP_AUTH": "off", "EVENTSAPP_RATE_LIMIT_INGEST": "1000000/minute",
                   "EVENTSAPP_RATE_LIMIT_STATS": "1000000/minute",
                   "EVENTSAPP_RATE_LIMIT_AUTH_FAILURES": "1000000/minute"})
    folder = None
    if not os.environ.get("DATABASE_URL"):
        # Not under pytest's tmp tree: each new pytest session on the machine (other checkouts, CI jobs)
        # resets that tree to 0700, and the embedded server, which runs as the `pgserver` user, then
        # fails to start there with "Permission denied".
        folder = Path(tempfile.mkdtemp(prefix="eventsapp-tests-"))
        folder.chmod(0o755)
        config["EVENTSAPP_DATA_DIR"] = folder / "pgdata"
    app = create_app(config)
    if os.environ.get("DATABASE_URL"):
        from flask_migrate import upgrade

        from eventsapp.database import MIGRATIONS_DIR

        with app.app_context():
            upgrade(directory=str(MIGRATIONS_DIR))
    yield app
    if folder is not None:
        from eventsapp import embedded_pg

        with app.app_context():
            db.engine.dispose()
        embedded_pg.stop(folder / "pgdata")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def engine(app) -> sa.Engine:
    with app.app_context():
        return db.engine


@pytest.fixture(autouse=True)
def _empty_tables(request) -> None:
    """Start every test that touches the database from empty tables."""
    if "app" not in request.fixturenames and "engine" not in request.fixturenames and "client" not in request.fixturenames:
        return
    engine = request.getfixturevalue("engine")
    names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    # The app's background folder may still be folding the previous test's events: take the fold lock
    # first so the TRUNCATE waits for that fold instead of deadlocking with it; retry if a fold that
    # had already locked some tables makes PostgreSQL pick this statement as the deadlock victim.
    for attempt in range(5):
        try:
            with engine.begin() as connection:
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": FOLD_LOCK_KEY})
                connection.exec_driver_sql(f"TRUNCATE {names}")
            return
        except sa.exc.OperationalError as exc:
            if not isinstance(exc.orig, psycopg2.errors.DeadlockDetected) or attempt == 4:
                raise


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def live_server(app) -> Iterator[str]:
    """The app served by waitress on a free loopback port, for tests that speak real HTTP."""
    from waitress.server import create_server

    server = create_server(app, host="127.0.0.1", port=0, threads=8)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid event as a client would send it; override any field."""
    event = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat(),
        "user_id": "user-1",
        "event_type": "app_open",
        "properties": {"plan": "pro", "n": 3},
    }
    event.update(overrides)
    return event


def stored_count(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.exec_driver_sql("SELECT count(*) FROM events").scalar_one()


def stored(engine: sa.Engine, order_by: str = "occurred_at") -> list[dict[str, Any]]:
    """Every stored event as a dict, in ``order_by`` order."""
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(sa.text(
            "SELECT event_id::text AS event_id, occurred_at, user_id, event_type, properties "
            f"FROM events ORDER BY {order_by}"))]
