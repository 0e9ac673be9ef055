"""Rate limits: one budget per identity (the key that authorised the request; the client IP with auth off).

A budget is charged only once a request is authorised (``charge``, called by ``auth.authenticate``),
so refusals (401/403) are free and each request spends exactly one identity's budget, whichever way
its key arrived (header or SDK body). Unknown keys are counted per client IP instead, and too many get
429 before any further lookup.

Flask-Limiter keeps the counters (``memory://`` or Redis, moving window) and nothing else: no limits
are registered with it and its header injection is off, because it stamps ``Retry-After`` on every
response and overwrites ours on 503s. ``Retry-After`` is set only on 429 (here) and 503 (errors.py).
"""

from __future__ import annotations

import math
import time

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter
from limits import RateLimitItem, parse_many

from ..errors import ApiError
from .keys import KeyIdentity
from .policy import BUDGET_LIMITS, access_for

AUTH_FAILURES = "auth_failures"
BROWSER_IP = "browser_ip"  # browser-safe keys: per client IP, besides the key's own budget
BUDGET_NAMES = (*BUDGET_LIMITS, AUTH_FAILURES, BROWSER_IP)

# Counters only: key_func is never called, as no limit is registered with Flask-Limiter.
limiter = Limiter(key_func=lambda: "", headers_enabled=False, strategy="moving-window")


def _client_address() -> str:
    return request.remote_addr or "unknown"


def _limits(config_key: str) -> list[RateLimitItem]:
    # Read per request, so tests and operators can change app.config without rebuilding the app.
    return parse_many(current_app.config[config_key])


def _identifiers(budget: str, who: str) -> tuple[str, ...]:
    return (current_app.config.get("RATELIMIT_KEY_PREFIX") or "eventsapp", budget, who)


def _too_many(budget: str, item: RateLimitItem, identifiers: tuple[str, ...], reason: str) -> ApiError:
    """The 429 for ``budget``, counted in eventsapp_rate_limited_total, with the seconds until a slot frees."""
    counter = current_app.extensions.get("eventsapp_rate_limited")
    if counter is not None:
        counter.labels(budget).inc()
    reset_at = limiter.limiter.get_window_stats(item, *identifiers).reset_time
    retry_after = max(1, math.ceil(reset_at - time.time()))
    return ApiError(f"{reason}; retry after {retry_after} s.", status_code=429,
                    headers={"Retry-After": str(retry_after)})


def charge(identity: KeyIdentity) -> None:
    """Spend one request of the current blueprint's budget for ``identity``; 429 when it is used up."""
    if g.get("rate_limit_charged"):
        return
    g.rate_limit_charged = True
    access = access_for(request.endpoint, request.blueprint)
    if access is None or access.budget is None:
        return
    budget = access.budget
    who = f"ip:{_client_address()}" if identity.anonymous else f"key:{identity.name}"
    identifiers = _identifiers(budget, who)
    items = _limits(BUDGET_LIMITS[budget])
    refused = next((item for item in items if not limiter.limiter.test(item, *identifiers)), None)
    if refused is None:
        for item in items:
            limiter.limiter.hit(item, *identifiers)
    tightest = refused or min(
        items, key=lambda item: limiter.limiter.get_window_stats(item, *identifiers).remaining
    )
    stats = limiter.limiter.get_window_stats(tightest, *identifiers)
    g.rate_limit_headers = {
        "X-RateLimit-Limit": str(tightest.amount),
        "X-RateLimit-Remaining": str(stats.remaining),
        "X-RateLimit-Reset": str(math.ceil(stats.reset_time)),
    }
    if refused is not None:
        raise _too_many(budget, refused, identifiers, f"Rate limit exceeded ({refused})")
    if identity.browser:
        _charge_browser_ip()


def _charge_browser_ip() -> None:
    """A browser key is public, so one client must not spend its whole budget: a second budget per IP."""
    identifiers = _identifiers(BROWSER_IP, f"ip:{_client_address()}")
    items = _limits("EVENTSAPP_RATE_LIMIT_BROWSER_IP")
    refused = next((item for item in items if not limiter.limiter.test(item, *identifiers)), None)
    if refused is not None:
        raise _too_many(BROWSER_IP, refused, identifiers, f"Rate limit per client exceeded ({refused})")
    for item in items:
        limiter.limiter.hit(item, *identifiers)


def check_auth_failures() -> None:
    """Refuse (429) a client IP that sent too many unknown keys lately, before looking up another."""
    identifiers = _identifiers(AUTH_FAILURES, _client_address())
    for item in _limits("EVENTSAPP_RATE_LIMIT_AUTH_FAILURES"):
        if not limiter.limiter.test(item, *identifiers):
            raise _too_many(AUTH_FAILURES, item, identifiers, "Too many unknown API keys from this address")


def count_auth_failure() -> None:
    identifiers = _identifiers(AUTH_FAILURES, _client_address())
    for item in _limits("EVENTSAPP_RATE_LIMIT_AUTH_FAILURES"):
        limiter.limiter.hit(item, *identifiers)


def _add_rate_limit_headers(response: Response) -> Response:
    for name, value in (g.get("rate_limit_headers") or {}).items():
        response.headers[name] = value
    return response


def init_limits(app: Flask) -> None:
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["EVENTSAPP_RATELIMIT_STORAGE_URI"])
    app.config.setdefault("RATELIMIT_KEY_PREFIX", app.config["EVENTSAPP_RATELIMIT_KEY_PREFIX"])
    limiter.init_app(app)
    app.after_request(_add_rate_limit_headers)
