"""Readiness: is the database reachable, and is its schema at head?"""
from __future__ import annotations

import sqlalchemy as sa
from flask import current_app

from ..database import SchemaGate, SchemaNotReady
from ..extensions import db


def schema_gate() -> SchemaGate:
    return current_app.extensions["eventsapp_schema_gate"]


def require_schema_at_head() -> None:
    """Refuse requests (503) until the schema is migrated; database errors become 503 too."""
    schema_gate().check(db.engine)


def readiness(engine: sa.Engine, gate: SchemaGate) -> tuple[bool, str]:
    """Return whether the service can answer, and why not."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        gate.check(engine)
    except SchemaNotReady as exc:
        return False, str(exc)
    except sa.exc.DBAPIError as exc:
        return False, f"database unreachable: {type(exc.orig).__name__ if exc.orig else exc}"
    return True, "ok"
