"""CORS for the paths a web page may send events to, and only those (README "Collect from the browser").

Which paths: every route whose blueprint says ``browser_ok`` in ``security/policy.py`` (``POST /events``,
the Segment/PostHog endpoints, the SDKs' config answers), plus ``/static/`` where posthog-js looks for
optional bundles (404). Stats, users, export and key management are never CORS-enabled, so a page
cannot read them with a browser user's reach; ``*`` in ``EVENTSAPP_CORS_ORIGINS`` therefore opens only
ingest. flask-cors answers preflights and sets the headers.

CORS only stops a page from *reading* an answer: a ``text/plain`` POST (what the SDKs send, a "simple
request") reaches the server from any page. So a request whose ``Origin`` is neither this server's nor
listed is refused here (403), before its key or body is looked at.
"""

from __future__ import annotations

import re

from flask import Flask, current_app, request
from flask_cors import CORS

from ..errors import ApiError
from ..security.policy import access_for

POSTHOG_STATIC = r"^/static/.*$"
PREFLIGHT_MAX_AGE = 86400  # browsers cap it (Chromium: 2 h), sparing a preflight per event anyway


def _rule_regex(rule: str) -> str:
    return (
        "^"
        + re.sub(
            r"<[^>]+>", "[^/]+", re.escape(rule).replace(r"\<", "<").replace(r"\>", ">").replace(r"\:", ":")
        )
        + "/?$"
    )


def browser_paths(app: Flask) -> list[str]:
    """Regexes of the paths open to web pages: the routes of ``browser_ok`` blueprints."""
    paths = []
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rpartition(".")[0] or None
        access = access_for(rule.endpoint, blueprint)
        if access is not None and access.browser_ok:
            paths.append(_rule_regex(rule.rule.rstrip("/")))
    return sorted(set(paths)) + [POSTHOG_STATIC]


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    return "*" in allowed or origin.lower().rstrip("/") in allowed


def _refuse_unlisted_origin() -> None:
    origin = request.headers.get("Origin")
    if not origin or request.method == "OPTIONS":
        return  # not from a page (or a preflight, answered without CORS headers when unlisted)
    access = access_for(request.endpoint, request.blueprint)
    if access is None or not access.browser_ok:
        return
    if origin.lower() == f"{request.scheme}://{request.host}".lower():
        return  # same origin: no CORS involved
    if not origin_allowed(origin, current_app.config["EVENTSAPP_CORS_ORIGINS"]):
        raise ApiError(
            f"Origin {origin!r} may not send events here (EVENTSAPP_CORS_ORIGINS).", status_code=403
        )


def init_cors(app: Flask) -> None:
    """Call after every blueprint is registered (the paths come from the routes)."""
    origins = app.config["EVENTSAPP_CORS_ORIGINS"]
    if origins:
        CORS(
            app,
            resources={path: {} for path in browser_paths(app)},
            origins=["*"] if "*" in origins else list(origins),
            max_age=PREFLIGHT_MAX_AGE,
            send_wildcard="*" in origins,
            supports_credentials=False,
            vary_header=True,
        )
    # First of all hooks: an unlisted page spends no key lookup and no rate-limit budget.
    app.before_request_funcs.setdefault(None, []).insert(0, _refuse_unlisted_origin)
