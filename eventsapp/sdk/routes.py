"""Drop-in endpoints for the Segment and PostHog SDKs: point their ``host=`` at this server.

Status codes follow what the SDKs do with them: success is exactly 200 (PostHog retries any other 2xx);
a bad payload is 400 and a key problem 401/403, which neither SDK retries; 413/415 likewise. Only
conditions worth retrying answer 429 or 503 (with Retry-After).
"""
from __future__ import annotations

from datetime import datetime

from flask import Response, current_app, request
from flask_smorest import Blueprint
from prometheus_client import Counter

from ..errors import document_errors
from ..extensions import db
from ..ingest import rules
from ..ingest.groupcommit import app_committer
from ..security import authenticate, key_from_headers
from ..security.auth import check_body_key_candidates, check_key_before_body
from . import intake, service
from .schemas import (
    PostHogBatchSchema,
    PostHogSuccessSchema,
    SegmentBatchSchema,
    SegmentMessageSchema,
    SegmentSuccessSchema,
)

SDK_REQUESTS = Counter("eventsapp_sdk_requests_total", "Requests to the SDK endpoints, by SDK and status",
                       ["sdk", "status"])

segment_blp = Blueprint("sdk_segment", __name__, url_prefix="/v1",
                        description="Segment HTTP tracking API (analytics-python, analytics.js, ...).")
posthog_blp = Blueprint("sdk_posthog", __name__,
                        description="PostHog capture API (posthog-python and other server SDKs).")

_ERRORS = {
    400: "Body is not valid JSON or gzip, or a message is invalid (errors.json names it by index and "
    "SDK field); nothing is stored. Not retried by the SDKs.",
    401: "Authentication is on and the key is missing or unknown.",
    403: "The key lacks the ingest scope.",
    413: "Body (or its inflated gzip) too large, or too many messages.",
    415: "Content-Type is not application/json, or Content-Encoding is not gzip.",
    503: "Database unavailable or schema not migrated; nothing was stored. The SDKs retry (Retry-After).",
}


def authenticate_sdk_key(raw_key: str | None) -> None:
    """THE auth call site of both SDK blueprints: the key must be an ``ingest`` key when auth is on."""
    authenticate(raw_key, "ingest")


def _segment_key(body: object) -> str | None:
    if _basic_username():
        return _basic_username()
    key = body.get("writeKey") if isinstance(body, dict) else None
    return key if isinstance(key, str) else key_from_headers()


def _posthog_key(body: object) -> str | None:
    if isinstance(body, dict):
        for name in ("api_key", "token"):
            if isinstance(body.get(name), str):
                return body[name]
    # posthog-js puts the token in each event's properties instead; the first event's speaks for the request.
    events = body.get("batch", [body]) if isinstance(body, dict) else body
    first = events[0] if isinstance(events, list) and events else None
    properties = first.get("properties") if isinstance(first, dict) else None
    if isinstance(properties, dict) and isinstance(properties.get("token"), str):
        return properties["token"]
    return key_from_headers()


def _count(sdk: str):
    def after(response: Response) -> Response:
        SDK_REQUESTS.labels(sdk, str(response.status_code)).inc()
        return response

    return after


for _blp, _sdk in ((segment_blp, "segment"), (posthog_blp, "posthog")):
    _blp.after_request(_count(_sdk))


def _document_errors(blp: Blueprint):
    return document_errors(blp, _ERRORS)


def _basic_username() -> str | None:
    auth = request.authorization
    return auth.username if auth is not None and auth.type == "basic" and auth.username else None


def _receive(header_key: str | None, limit: int, key_fields: tuple[str, ...]) -> object:
    """The parsed body, read only once the key allows it (see ``intake``: header key, or scanned body key)."""
    key_checked = check_key_before_body(header_key, "ingest")
    raw = intake.read_body(request, limit)
    if not key_checked:
        check_body_key_candidates(intake.key_candidates(raw, key_fields), "ingest")
    return intake.parse(raw)


def _segment(message_type: str | None) -> dict:
    received_at = datetime.now(rules.UTC)
    body = _receive(_basic_username() or key_from_headers(), service.SEGMENT_MAX_BATCH_BYTES, ("writeKey",))
    authenticate_sdk_key(_segment_key(body))
    return service.ingest_segment(db.engine, body, message_type, received_at, committer=app_committer())


# analytics.js (the browser SDK) posts to the first letter of each call's type, and /v1/b when batching.
SEGMENT_SHORT_PATHS = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias"}


@segment_blp.route("/batch", methods=["POST"])
@segment_blp.route("/b", methods=["POST"], endpoint="segment_b")
@segment_blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": SegmentBatchSchema}}})
@segment_blp.response(200, SegmentSuccessSchema, description="Stored (messages already stored are skipped).")
@_document_errors(segment_blp)
def segment_batch():
    """Store a Segment batch of track/identify/page/screen/group/alias messages."""
    return _segment(None)


@segment_blp.route("/<any(track, identify, page, screen, group, alias, t, i, p, s, g, a):call>",
                   methods=["POST"])
@segment_blp.doc(requestBody={"required": True,
                              "content": {"application/json": {"schema": SegmentMessageSchema}}})
@segment_blp.response(200, SegmentSuccessSchema, description="Stored (a message already stored is skipped).")
@_document_errors(segment_blp)
def segment_call(call: str):
    """Store one Segment call; its type is the path's last segment (or its first letter)."""
    return _segment(SEGMENT_SHORT_PATHS.get(call, call))


@posthog_blp.route("/batch/", methods=["POST"], strict_slashes=False, endpoint="posthog_batch")
@posthog_blp.route("/capture/", methods=["POST"], strict_slashes=False, endpoint="posthog_capture")
@posthog_blp.route("/e/", methods=["POST"], strict_slashes=False, endpoint="posthog_e")
@posthog_blp.route("/i/v0/e/", methods=["POST"], strict_slashes=False, endpoint="posthog_i_v0_e")
@posthog_blp.doc(requestBody={
    "required": True,
    "description": '{"batch": [...], "api_key"}, an array of events, or one event object.',
    "content": {"application/json": {"schema": PostHogBatchSchema}},
})
@posthog_blp.response(200, PostHogSuccessSchema, description="Stored (events already stored are skipped).")
@_document_errors(posthog_blp)
def posthog_capture():
    """Store PostHog events (batch or single capture)."""
    received_at = datetime.now(rules.UTC)
    body = _receive(key_from_headers(), current_app.config["EVENTSAPP_MAX_BODY_BYTES"], ("api_key", "token"))
    authenticate_sdk_key(_posthog_key(body))
    return service.ingest_posthog(db.engine, body, received_at, committer=app_committer())

