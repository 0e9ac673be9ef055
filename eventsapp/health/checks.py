"""Readiness: is the database reachable, is its schema at head, and does it accept our timezone?"""
from __future__ import annotations

import sqlalchemy as sa
from flask import current_app

from ..database import SchemaGate, SchemaNotReady
from ..extensions import db
from ..stats.calendar import timezone_problem


def schema_gate() -> SchemaGate:
    return current_app.extensions["eventsapp_schema_gate"]


def require_schema_at_head() -> None:
    """Refuse requests (503) until the schema is migrated; database errors become 503 too."""
    schema_gate().check(db.engine)


def readiness(engine: sa.Engine, gate: SchemaGate, project_tz: str | None = None) -> tuple[bool, str]:
    """Return whether the service can answer, and why not.

    ``project_tz`` (EVENTSAPP_TIMEZONE) must be a name the database reads as a zone: every stats read and
    the rollups depend on it, so a name it refuses makes the service unready rather than 503 per read.
    """
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        gate.check(engine)
        problem = timezone_problem(engine, project_tz) if project_tz is not None else None
    except SchemaNotReady as exc:
        return False, str(exc)
    except sa.exc.DBAPIError as exc:
        return False, f"database unreachable: {type(exc.orig).__name__ if exc.orig else exc}"
    if problem:
        return False, f"EVENTSAPP_TIMEZONE={project_tz!r} is not usable: {problem}"
    return True, "ok"


def analytics_replica_status(engine: sa.Engine | None) -> str | None:
    """How the analytics standby (EVENTSAPP_ANALYTICS_DATABASE_URL) is doing, or None when there is none.

    Reported by /ready but not a reason to be unready: ingest and everything else work without it (only
    /stats/* answers 503 while it is away or behind).
    """
    if engine is None:
        return None
    try:
        with engine.connect() as connection:
            in_recovery, paused = connection.exec_driver_sql(
                "SELECT pg_is_in_recovery(), pg_is_in_recovery() AND pg_is_wal_replay_paused()"
            ).one()
    except sa.exc.DBAPIError as exc:
        return f"unreachable: {type(exc.orig).__name__ if exc.orig else exc}"
    if paused:
        return "replay paused"
    return "ok" if in_recovery else "ok (not a standby)"
