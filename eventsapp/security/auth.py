"""Who may call what: the request hooks that gate, authenticate and charge each request.

Order per request (``init_auth``): the schema gate (503 until migrated: nothing below may touch a
table that is not there yet), then the key check for header-key blueprints, which also charges the
rate-limit budget. SDK blueprints carry the key in the body; their views call ``authenticate``.
"""

from __future__ import annotations

from flask import Flask, current_app, g, request

from ..errors import ApiError
from ..extensions import db
from ..health.checks import require_schema_at_head
from .keys import ANONYMOUS, KeyCache, KeyIdentity
from .limits import charge, check_auth_failures, count_auth_failure
from .policy import METRICS_ENDPOINT, METRICS_SCOPE, UNMAPPED_SCOPE, Access, access_for

__all__ = ["METRICS_ENDPOINT", "METRICS_SCOPE", "UNMAPPED_SCOPE", "authenticate", "required_scope"]

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


def auth_enabled() -> bool:
    return current_app.config.get("EVENTSAPP_AUTH", "required") != "off"


def authenticate(raw_key: str | None, scope: str) -> KeyIdentity:
    """Return the identity of ``raw_key`` if it may use ``scope``.

    Raises ApiError 401 for a missing, unknown or revoked key and 403 for a key without the scope.
    With EVENTSAPP_AUTH=off, returns an anonymous identity at once. Then charges the request's
    rate-limit budget to that identity (429 when spent): refusals above cost no budget. Sets
    ``g.api_key_name`` so the access log names the caller.
    """
    identity = _identify(raw_key, scope)
    charge(identity)
    return identity


def check_key_before_body(header_key: str | None, scope: str) -> bool:
    """Before an SDK body is read: authenticate a key sent in a header (True), else refuse (429) a client
    IP over its unknown-key limit. False when the key must come from the body, or auth is off."""
    if not auth_enabled():
        return False
    if header_key:
        authenticate(header_key, scope)
        return True
    check_auth_failures()
    return False


def check_body_key_candidates(candidates: list[str], scope: str) -> None:
    """Before an SDK body is parsed: authenticate the first known key among the values found in its
    text (scope, browser-key rules, rate-limit budget), else 401.

    The parsed body's key is authenticated afterwards as usual and must be that same key. Several
    unknown candidates cost one counted failure, as one request.
    """
    if not auth_enabled():
        return
    if not candidates:
        raise _unauthorized("API key required: send it in the body (api_key/token/writeKey), as "
                            "'Authorization: Bearer KEY' or 'X-API-Key: KEY'.")
    ttl = current_app.config.get("EVENTSAPP_KEY_CACHE_SECONDS", 5)
    known = next((key for key in candidates if _cache.lookup(db.engine, key, ttl) is not None), None)
    if known is None:
        count_auth_failure()
        raise _unauthorized("API key is unknown or revoked.")
    authenticate(known, scope)
    g.sdk_body_key = known


def _identify(raw_key: str | None, scope: str) -> KeyIdentity:
    if not auth_enabled():
        return ANONYMOUS
    if not raw_key:
        raise _unauthorized("API key required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.")
    check_auth_failures()
    header_key = key_from_headers()
    prechecked = g.get("sdk_body_key")
    if prechecked is not None and prechecked != raw_key:
        count_auth_failure()  # the body's own key is not the one its text scan vouched for
        raise _unauthorized("The request carries two different API keys; send one.")
    if header_key is not None and header_key != raw_key:
        # One identity per request: a second key beside the one used would otherwise be a free oracle
        # (looked up, never counted) or a way to spend another key's budget.
        count_auth_failure()
        raise _unauthorized("The request carries two different API keys; send one.")
    identity = _cache.lookup(db.engine, raw_key, current_app.config.get("EVENTSAPP_KEY_CACHE_SECONDS", 5))
    if identity is None:
        count_auth_failure()
        raise _unauthorized("API key is unknown or revoked.")
    g.api_key_name = identity.name
    if identity.browser:
        _check_browser_key(identity)
    if not identity.allows(scope):
        raise ApiError(
            f"API key {identity.name!r} lacks the {scope!r} scope this endpoint needs.", status_code=403
        )
    return identity


def _check_browser_key(identity: KeyIdentity) -> None:
    """A browser-safe key works only where a page may send events, and only from its listed origins.

    The Origin check stops other web sites from using the key in their visitors' browsers (a browser
    cannot lie about Origin); a script outside a browser can, which is why these keys can only ingest
    and are also rate-limited per client IP.
    """
    access = _access()
    if access is None or not access.browser_ok:
        raise ApiError(f"API key {identity.name!r} is a browser key: it can only send events.",
                       status_code=403)
    origin = (request.headers.get("Origin") or "").strip().rstrip("/").lower()
    if identity.origins and origin not in identity.origins:
        raise ApiError(f"API key {identity.name!r} may not be used from origin {origin or 'none'!r}.",
                       status_code=403)


def _access_for(endpoint: str | None, blueprint: str | None) -> Access | None:
    metrics_auth = endpoint == METRICS_ENDPOINT and current_app.config.get("EVENTSAPP_METRICS_AUTH") == "required"
    return access_for(endpoint, blueprint, metrics_auth)


def _access() -> Access | None:
    return _access_for(request.endpoint, request.blueprint)


def required_scope(endpoint: str | None, blueprint: str | None) -> str | None:
    """The scope a request needs before its view runs, or None when it is open (or checked in the view)."""
    access = _access_for(endpoint, blueprint)
    if access is None or access.key_in_body:
        return None
    return access.scope


def _gate_schema() -> None:
    access = _access()
    if access is not None and access.needs_schema:
        require_schema_at_head()


def _authorize_request() -> None:
    access = _access()
    if access is None or access.key_in_body or request.method == "OPTIONS":
        # No route (404/405), the view authenticates the key its body carries, or a CORS preflight
        # (browsers never send a key with one; it must answer 200 for the real request to follow).
        return
    if access.scope is not None and auth_enabled():
        g.api_identity = authenticate(key_from_headers(), access.scope)
    elif access.budget is not None:
        charge(ANONYMOUS)


def clear_cache() -> None:
    """Forget cached lookups (tests; a revoke in this process takes effect immediately)."""
    _cache.clear()


def init_auth(app: Flask) -> None:
    # The gate first: with an unmigrated database, auth's key lookup would fail on a missing table.
    app.before_request(_gate_schema)
    app.before_request(_authorize_request)
