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
