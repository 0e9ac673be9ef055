"""``/health`` (the process is up) and ``/ready`` (the database answers and its schema is at head)."""
from __future__ import annotations

from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from ..database import analytics_engine
from ..extensions import db
from .checks import analytics_replica_status, readiness, schema_gate

blp = Blueprint("health", __name__, description="Liveness and readiness probes.")


class StatusSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})
    reason = fields.String()
    analytics = fields.String(metadata={"description": "With EVENTSAPP_ANALYTICS_DATABASE_URL: the standby's "
                                        "state (ok, replay paused, unreachable: …); informational only."})


@blp.route("/health")
@blp.response(200, StatusSchema)
def health():
    """Report that the process is up."""
    return {"status": "ok"}


@blp.route("/ready")
@blp.response(200, StatusSchema, description="Ready to take requests.")
@blp.alt_response(503, schema=StatusSchema, description="Not ready; `reason` says why (database down, schema "
                  "not migrated, or an EVENTSAPP_TIMEZONE the database does not accept).")
def ready():
    """Report whether the database is reachable and migrated and accepts EVENTSAPP_TIMEZONE."""
    ok, reason = readiness(db.engine, schema_gate(), current_app.config["EVENTSAPP_TIMEZONE"])
    body = {"status": "ok"} if ok else {"status": "unavailable", "reason": reason}
    analytics = analytics_replica_status(analytics_engine(current_app))
    if analytics is not None:
        body["analytics"] = analytics
    return body if ok else (body, 503)
