"""HTTP ingest: ``POST /events``."""
from __future__ import annotations

from flask import current_app, request
from flask_smorest import Blueprint

from ..errors import ApiError, document_errors
from ..extensions import db
from . import rules, service
from .body import read_json_body
from .groupcommit import app_committer
from .schemas import EventSchema, IngestResultSchema

blp = Blueprint("ingest", __name__, description="Send events. Each event is stored once per event_id.")

IDEMPOTENCY_KEY_MAX = 255

_ERRORS = {
    400: "Body is not valid JSON, gzip body is corrupt, or Idempotency-Key is too long.",
    409: "A request with the same Idempotency-Key is still in flight.",
    413: "More than 10,000 events, or the body (or its inflated gzip) exceeds EVENTSAPP_MAX_BODY_BYTES.",
    415: "Content-Type is not application/json, or Content-Encoding is not gzip.",
    422: "Invalid events (errors.json names each by index and field; nothing is stored), "
    "or an Idempotency-Key reused with a different body.",
    503: "Database unavailable or schema not migrated; nothing was stored. Honour Retry-After.",
}


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise ApiError(
            f"Idempotency-Key must be 1..{IDEMPOTENCY_KEY_MAX} characters.",
            status_code=400,
            errors={"headers": {"Idempotency-Key": [f"Length must be between 1 and {IDEMPOTENCY_KEY_MAX}."]}},
        )
    return key


_document_errors = document_errors(blp, _ERRORS)


@blp.route("/events", methods=["POST"])
@blp.doc(
    requestBody={
        "required": True,
        "description": "1..10,000 events; may be sent with Content-Encoding: gzip.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": rules.MAX_EVENTS_PER_BATCH,
                    "items": EventSchema,
                }
            }
        },
    },
    parameters=[
        {
            "in": "header",
            "name": "Idempotency-Key",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX},
            "description": "A retry with the same key and body replays the first response "
            "(header Idempotent-Replayed: true).",
        }
    ],
)
@blp.response(201, IngestResultSchema, description="Every event was new.")
@blp.alt_response(200, schema=IngestResultSchema, description="Some events were already stored (or repeated).")
@_document_errors
def post_events():
    """Store a batch of events exactly once."""
    body = read_json_body(request, current_app.config["EVENTSAPP_MAX_BODY_BYTES"])
    outcome = service.ingest_batch(
        db.engine,
        body.value,
        idempotency_key=_idempotency_key(),
        fingerprint=body.sha256,
        key_ttl_seconds=current_app.config["EVENTSAPP_IDEMPOTENCY_TTL"],
        committer=app_committer(),
    )
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return outcome.body, outcome.status_code, headers
