"""Which PostgreSQL we use, and whether its schema is at the migrations' head."""
from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from flask import Flask

from . import embedded_pg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class SchemaNotReady(Exception):
    """The database is reachable but its schema is not at the migrations' head."""


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest migration's revision id."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at, or None for an unmigrated database."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


class SchemaGate:
    """Remembers once the schema has been seen at head, so writes check the database only until then."""

    def __init__(self) -> None:
        self._at_head = False
        self._lock = threading.Lock()

    def check(self, engine: sa.Engine) -> None:
        """Raise SchemaNotReady (or a database error) unless the schema is at head."""
        if self._at_head:
            return
        with engine.connect() as connection:
            current = current_revision(connection)
        head = head_revision()
        if current != head:
            raise SchemaNotReady(
                f"database schema is at {current or 'no revision'}, the app needs {head}: run `flask db upgrade`"
            )
        with self._lock:
            self._at_head = True


def resolve_database_url(app: Flask) -> str:
    """DATABASE_URL if given, else the URL of an embedded server started in EVENTSAPP_DATA_DIR."""
    if app.config.get("DATABASE_URL"):
        return app.config["DATABASE_URL"]
    app.config["EVENTSAPP_EMBEDDED"] = True
    url = embedded_pg.start(app.config["EVENTSAPP_DATA_DIR"])
    embedded_pg.keep_alive(app.config["EVENTSAPP_DATA_DIR"])  # restarted after a crash (kill -9, OOM)
    return url


def upgrade_embedded_schema(app: Flask) -> None:
    """Apply migrations on start, as the embedded database belongs to this app alone."""
    from flask_migrate import upgrade

    with app.app_context():
        from .extensions import db

        with db.engine.connect() as connection:
            if current_revision(connection) == head_revision():
                return
        upgrade(directory=str(MIGRATIONS_DIR))


# --- analytics reads from a hot standby (EVENTSAPP_ANALYTICS_DATABASE_URL) --------------------------

REPLAY_POLL_SECONDS = 0.02
# True once the standby has replayed up to :lsn; a server not in recovery (the primary itself) always has.
REPLAYED_SQL = sa.text(
    "SELECT NOT pg_is_in_recovery() OR coalesce(pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn), false)")


def analytics_engine(app: Flask) -> sa.Engine | None:
    """The engine of EVENTSAPP_ANALYTICS_DATABASE_URL (made once per app), or None: reads use the primary."""
    url = app.config.get("EVENTSAPP_ANALYTICS_DATABASE_URL")
    if not url:
        return None
    engine = app.extensions.get("eventsapp_analytics_engine")
    if engine is None:
        from .config import ENGINE_OPTIONS, normalize_database_url

        with _analytics_lock:
            engine = app.extensions.get("eventsapp_analytics_engine")
            if engine is None:
                engine = sa.create_engine(normalize_database_url(url), **ENGINE_OPTIONS,
                                          pool_size=10, max_overflow=10)
                app.extensions["eventsapp_analytics_engine"] = engine
    return engine


_analytics_lock = threading.Lock()


def primary_wal_lsn(connection: sa.Connection) -> str:
    """The primary's current WAL position: everything committed so far is at or before it."""
    return connection.exec_driver_sql("SELECT pg_current_wal_lsn()::text").scalar_one()


def wait_for_replay(connection: sa.Connection, lsn: str, deadline: float) -> bool:
    """Wait until the standby behind ``connection`` has replayed the primary's WAL up to ``lsn``.

    True when it has (a server that is not in recovery, e.g. the primary itself, counts as caught up);
    False when ``deadline`` (``time.monotonic()``) passed first. Polls: a standby offers no way to be
    woken at an LSN.
    """
    while True:
        caught_up = connection.execute(REPLAYED_SQL, {"lsn": lsn}).scalar_one()
        if caught_up:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(REPLAY_POLL_SECONDS, remaining))


def adopt_project_timezone(app: Flask) -> None:
    """Make the app's EVENTSAPP_TIMEZONE the project timezone stored in the database, if there is one.

    The rollups hold local days of that one timezone, so the dashboard, the stats' default ``tz`` and an
    import must use it whatever this process's environment says (``project_timezone`` logs a WARNING on a
    mismatch). A database that is unreachable or not migrated yet is left for later: every read and fold
    checks the stored timezone again.
    """
    from .extensions import db
    from .stats import rollups

    try:
        with app.app_context(), db.engine.connect() as connection:
            stored = rollups.rollup_timezone(connection)
    except sa.exc.SQLAlchemyError:
        return
    app.config["EVENTSAPP_TIMEZONE"] = rollups.project_timezone(stored, app.config["EVENTSAPP_TIMEZONE"])
