"""The one table of what each blueprint needs: a key scope, a rate-limit budget, a migrated database.

The request hooks (schema gate, auth, rate limits) and the OpenAPI plugin all read it, so what the
docs say and what the server enforces cannot drift apart. A blueprint missing here gets ``UNMAPPED``:
closed to all but ``admin`` keys and behind the schema gate, so a new endpoint is never open by
accident. Adding a kind of access (say, browser keys with per-IP limits) is a new ``Access`` field
read by the hooks, not a new table.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Access:
    """What a request to one blueprint needs before its view runs."""

    # The key scope it needs when auth is on; None = open to everyone.
    scope: str | None
    # The rate-limit budget it spends (a key of BUDGET_LIMITS), charged to the identity that
    # authorised the request (its key; the client IP when auth is off). None = not limited.
    budget: str | None = None
    # The key travels in the body (Segment/PostHog SDKs): the view calls ``authenticate`` itself.
    key_in_body: bool = False
    # Answered with 503 until the database schema is at the migrations' head.
    needs_schema: bool = True
    # Reachable from a web page: CORS headers per EVENTSAPP_CORS_ORIGINS, a cross-origin request from
    # an origin not listed is refused, and browser-safe keys are accepted (they are refused elsewhere).
    browser_ok: bool = False


# Budget name -> the config key holding its limit (any `limits` string, read per request).
BUDGET_LIMITS: dict[str, str] = {
    "ingest": "EVENTSAPP_RATE_LIMIT_INGEST",
    "stats": "EVENTSAPP_RATE_LIMIT_STATS",
}

_OPEN = Access(scope=None, needs_schema=False)

BLUEPRINTS: dict[str, Access] = {
    "ingest": Access(scope="ingest", budget="ingest", browser_ok=True),
    "sdk_segment": Access(scope="ingest", budget="ingest", key_in_body=True, browser_ok=True),
    "sdk_posthog": Access(scope="ingest", budget="ingest", key_in_body=True, browser_ok=True),
    # posthog-js remote config / flags and analytics.js settings: fixed answers, no key, no database.
    "sdk_browser": Access(scope=None, needs_schema=False, browser_ok=True),
    "stats": Access(scope="read", budget="stats"),
    # /ready reports the schema itself (503 with the reason); /health must answer while it is not ready.
    "health": _OPEN,
    "api-docs": _OPEN,
    "docs_assets": _OPEN,
    "dashboard": _OPEN,
    # People (issue 15): reading a user's events needs `read`; DELETE /users/{id} needs `admin` (below).
    "people": Access(scope="read", budget="stats"),
    "people_admin": Access(scope="admin"),
    # Export hands out raw events as GET /users/{id}/events does, only more at once: `read` as well.
    "export": Access(scope="read", budget="stats"),
}
UNMAPPED = Access(scope="admin")
UNMAPPED_SCOPE = UNMAPPED.scope

# Endpoints outside any blueprint.
STATIC_ENDPOINT = "static"
METRICS_ENDPOINT = "prometheus_metrics"
METRICS_SCOPE = "read"


def access_for(endpoint: str | None, blueprint: str | None, metrics_auth: bool = False) -> Access | None:
    """What a request to ``endpoint`` needs; None when nothing (no route: 404/405 answer the same to all)."""
    if endpoint is None:
        return None
    if endpoint == METRICS_ENDPOINT:
        return Access(scope=METRICS_SCOPE) if metrics_auth else _OPEN
    if blueprint is None:
        return _OPEN if endpoint == STATIC_ENDPOINT else UNMAPPED
    return BLUEPRINTS.get(blueprint, UNMAPPED)
