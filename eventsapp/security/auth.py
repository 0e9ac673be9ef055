"""Who may call what: the scope each blueprint needs, and the request hook that enforces it."""

from __future__ import annotations

import logging

from flask import Flask, current_app, g, request

from ..errors import ApiError
from ..extensions import db
from .keys import ANONYMOUS, KeyCache, KeyIdentity
from .limits import check_auth_failures, count_auth_failure

log = logging.getLogger(__name__)

# The one table of who needs what, by blueprint name. None = open to everyone.
# SDK blueprints read the key from the body, so their views call ``authenticate`` themselves.
BLUEPRINT_SCOPES: dict[str, str | None] = {
    "ingest": "ingest",
    "stats": "read",
    "health": None,
    "api-docs": None,
    "docs_assets": None,
    "dashboard": None,
}
AUTHENTICATE_IN_VIEW: dict[str, str] = {"sdk_segment": "ingest", "sdk_posthog": "ingest"}
# Blueprints nobody listed above need a key with this scope: new endpoints are closed until mapped.
UNMAPPED_SCOPE = "admin"
METRICS_ENDPOINT = "prometheus_metrics"
METRICS_SCOPE = "read"

_cache = KeyCache()


def _unauthorized(message: str) -> ApiError:
    return ApiError(message, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="eventsapp"'})


def key_from_headers() -> str | None:
    """The key sent as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("X-API-Key", "").strip() or None


def key_from_basic_auth() -> str | None:
    """The username of ``Authorization: Basic`` (Segment's SDKs send ``WRITEKEY:``), if any."""
    authorization = request.authorization
    if authorization is not None and authorization.type == "basic" and authorization.username:
        return authorization.username
    return None


def auth_enabled() -> bool:
    return current_app.config.get("EVENTSAPP_AUTH", "required") != "off"


def authenticate(raw_key: str | None, scope: str) -> KeyIdentity:
    """Return the identity of ``raw_key`` if it may use ``scope``.

    Raises ApiError 401 for a missing, unknown or revoked key and 403 for a key without the scope.
    With EVENTSAPP_AUTH=off, returns an anonymous identity at once. Sets ``g.api_key_name`` so logs
    and the rate limiter know the caller.
    """
    if not auth_enabled():
        return ANONYMOUS
    if not raw_key:
        raise _unauthorized("API key required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.")
    check_auth_failures()
    identity = _cache.lookup(db.engine, raw_key, current_app.config.get("EVENTSAPP_KEY_CACHE_SECONDS", 5))
    if identity is None:
        count_auth_failure()
        raise _unauthorized("API key is unknown or revoked.")
    g.api_key_name = identity.name
    if not identity.allows(scope):
        raise ApiError(
            f"API key {identity.name!r} lacks the {scope!r} scope this endpoint needs.", status_code=403
        )
    return identity


def required_scope(endpoint: str | None, blueprint: str | None) -> str | None:
    """The scope a request needs before its view runs, or None when it is open (or checked in the view)."""
    if endpoint is None:  # 404 and 405 answer the same with or without a key
        return None
    if endpoint == METRICS_ENDPOINT:
        return METRICS_SCOPE if current_app.config.get("EVENTSAPP_METRICS_AUTH") == "required" else None
    if blueprint is None:
        return None if endpoint == "static" else UNMAPPED_SCOPE
    if blueprint in AUTHENTICATE_IN_VIEW:
        return None
    return BLUEPRINT_SCOPES.get(blueprint, UNMAPPED_SCOPE)


def _authorize_request() -> None:
    if not auth_enabled():
        return
    blueprint = request.blueprint
    if blueprint in AUTHENTICATE_IN_VIEW:
        # Let the limiter count this caller per key when the SDK sent it as a header; the view
        # authenticates whatever key the body carries.
        raw_key = key_from_headers() or key_from_basic_auth()
        if raw_key:
            identity = _cache.lookup(
                db.engine, raw_key, current_app.config.get("EVENTSAPP_KEY_CACHE_SECONDS", 5)
            )
            if identity is not None:
                g.api_key_name = identity.name
        return
    scope = required_scope(request.endpoint, blueprint)
    if scope is not None:
        g.api_identity = authenticate(key_from_headers(), scope)


def clear_cache() -> None:
    """Forget cached lookups (tests; a revoke in this process takes effect immediately)."""
    _cache.clear()


def init_auth(app: Flask) -> None:
    # Runs before the rate limiter's hook (registered later), so limits count per key.
    app.before_request(_authorize_request)
    if app.config.get("EVENTSAPP_AUTH") == "off":
        log.warning(
            "EVENTSAPP_AUTH=off: every endpoint is open to anyone who can reach it; use only locally."
        )
