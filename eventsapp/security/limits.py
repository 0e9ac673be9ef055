"""Rate limits (Flask-Limiter): per key (per IP with auth off); one budget for ingest, one for stats."""

from __future__ import annotations

import math
import time

from flask import Blueprint, Flask, current_app, g, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse as parse_limit
from prometheus_client import Counter

from ..errors import ApiError, error_response

RATE_LIMITED = Counter(
    "eventsapp_rate_limited_total", "Requests refused with 429 by the rate limiter, by budget", ["budget"]
)

# Budget name -> (config key of its limit, blueprints that spend it).
BUDGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ingest": ("EVENTSAPP_RATE_LIMIT_INGEST", ("ingest", "sdk_segment", "sdk_posthog")),
    "stats": ("EVENTSAPP_RATE_LIMIT_STATS", ("stats",)),
}

for _budget in (*BUDGETS, "auth_failures"):
    RATE_LIMITED.labels(_budget)  # export zeros, so rate() and alerts work before the first 429


def rate_limit_key() -> str:
    """Whose budget a request spends: the API key's name once auth identified it, else the client IP."""
    name = g.get("api_key_name")
    return f"key:{name}" if name else f"ip:{request.remote_addr or 'unknown'}"


def _auth_failure_limit():
    return parse_limit(current_app.config.get("EVENTSAPP_RATE_LIMIT_AUTH_FAILURES", "60/minute"))


def check_auth_failures() -> None:
    """Refuse (429) a client IP that sent too many unknown keys lately, before looking up another."""
    item, address = _auth_failure_limit(), request.remote_addr or "unknown"
    if not limiter.limiter.test(item, "auth-failures", address):
        RATE_LIMITED.labels("auth_failures").inc()
        reset_at = limiter.limiter.get_window_stats(item, "auth-failures", address).reset_time
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise ApiError(
            f"Too many unknown API keys from this address; retry after {retry_after} s.",
            status_code=429,
            headers={"Retry-After": str(retry_after)},
        )


def count_auth_failure() -> None:
    limiter.limiter.hit(_auth_failure_limit(), "auth-failures", request.remote_addr or "unknown")


def _limit_from_config(config_key: str):
    # Read per request, so tests and operators can change app.config without rebuilding the app.
    return lambda: current_app.config[config_key]


limiter = Limiter(key_func=rate_limit_key, headers_enabled=True, strategy="moving-window")


def _on_rate_limited(error: RateLimitExceeded):
    budget = getattr(error.limit, "scope", None) or "other"
    RATE_LIMITED.labels(budget if budget in BUDGETS else "other").inc()
    reset_at = limiter.current_limit.reset_at if limiter.current_limit else time.time() + 1
    retry_after = max(1, math.ceil(reset_at - time.time()))
    return error_response(
        429,
        f"Rate limit exceeded ({error.description}); retry after {retry_after} s.",
        headers={"Retry-After": str(retry_after)},
    )


def init_limits(app: Flask) -> None:
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["EVENTSAPP_RATELIMIT_STORAGE_URI"])
    app.config.setdefault("RATELIMIT_KEY_PREFIX", app.config["EVENTSAPP_RATELIMIT_KEY_PREFIX"])
    limiter.init_app(app)
    for budget, (config_key, blueprint_names) in BUDGETS.items():
        shared = limiter.shared_limit(_limit_from_config(config_key), scope=budget)
        for name in blueprint_names:
            # Flask-Limiter keys blueprint limits by name, so blueprints registered after this call
            # (or not built yet) are covered as well.
            shared(Blueprint(name, __name__))
    app.register_error_handler(RateLimitExceeded, _on_rate_limited)
