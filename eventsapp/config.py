"""All configuration comes from here: environment variables, read once, with their defaults.

Every variable is listed in README.md's configuration table.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "instance" / "pgdata"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = (env.get(name) or default).strip().lower()
    if raw not in allowed:
        raise SystemExit(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


def normalize_database_url(url: str) -> str:
    """Map the URLs users hand us (docker compose, hosted databases) onto the psycopg2 driver.

    SQLAlchemy 2.1 picks psycopg 3 for a bare ``postgresql://`` URL, and we ship only psycopg2.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the app's configuration read from ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    database_url = env.get("DATABASE_URL", "").strip()
    return {
        "DATABASE_URL": normalize_database_url(database_url) if database_url else None,
        "EVENTSAPP_DATA_DIR": Path(env.get("EVENTSAPP_DATA_DIR") or DEFAULT_DATA_DIR),
        "EVENTSAPP_IDEMPOTENCY_TTL": _int(env, "EVENTSAPP_IDEMPOTENCY_TTL", 24 * 3600),
        "EVENTSAPP_MAX_BODY_BYTES": _int(env, "EVENTSAPP_MAX_BODY_BYTES", 20 * 1024 * 1024),
        "EVENTSAPP_TIMEZONE": env.get("EVENTSAPP_TIMEZONE") or "UTC",
        "EVENTSAPP_QUERY_TIMEOUT_MS": _int(env, "EVENTSAPP_QUERY_TIMEOUT_MS", 10_000),
        # Unset: INFO when serving, WARNING for other CLI commands (observability.effective_log_level).
        "EVENTSAPP_LOG_LEVEL": (env.get("EVENTSAPP_LOG_LEVEL") or "").strip().upper() or None,
        # Hardening: auth, rate limits, serving. Auth and limits are read from app.config per request.
        "EVENTSAPP_AUTH": _choice(env, "EVENTSAPP_AUTH", "required", ("required", "off")),
        "EVENTSAPP_METRICS_AUTH": _choice(env, "EVENTSAPP_METRICS_AUTH", "off", ("required", "off")),
        "EVENTSAPP_KEY_CACHE_SECONDS": _int(env, "EVENTSAPP_KEY_CACHE_SECONDS", 5),
        "EVENTSAPP_RATE_LIMIT_INGEST": env.get("EVENTSAPP_RATE_LIMIT_INGEST") or "6000/minute",
        "EVENTSAPP_RATE_LIMIT_STATS": env.get("EVENTSAPP_RATE_LIMIT_STATS") or "1200/minute",
        "EVENTSAPP_RATE_LIMIT_AUTH_FAILURES": env.get("EVENTSAPP_RATE_LIMIT_AUTH_FAILURES") or "60/minute",
        "EVENTSAPP_RATELIMIT_STORAGE_URI": env.get("EVENTSAPP_RATELIMIT_STORAGE_URI") or "memory://",
        "EVENTSAPP_RATELIMIT_KEY_PREFIX": env.get("EVENTSAPP_RATELIMIT_KEY_PREFIX") or "eventsapp",
        "EVENTSAPP_THREADS": _int(env, "EVENTSAPP_THREADS", 8),
        "EVENTSAPP_CHANNEL_TIMEOUT": _int(env, "EVENTSAPP_CHANNEL_TIMEOUT", 30),
        "EVENTSAPP_SHUTDOWN_TIMEOUT": _int(env, "EVENTSAPP_SHUTDOWN_TIMEOUT", 30),
        # Slow clients: a whole request (headers and body) must arrive within this many seconds of its
        # first byte, and one client IP may hold this many connections (0: no limit; behind a proxy).
        "EVENTSAPP_REQUEST_READ_TIMEOUT": _int(env, "EVENTSAPP_REQUEST_READ_TIMEOUT", 60),
        "EVENTSAPP_MAX_CONNECTIONS_PER_IP": _int(env, "EVENTSAPP_MAX_CONNECTIONS_PER_IP", 20),
        # Browser SDKs: the web origins allowed to send events (none by default; "*" for any), and the
        # budget of a browser-safe key per client IP (on top of the key's own ingest budget).
        "EVENTSAPP_CORS_ORIGINS": parse_origins(env.get("EVENTSAPP_CORS_ORIGINS", "")),
        "EVENTSAPP_RATE_LIMIT_BROWSER_IP": env.get("EVENTSAPP_RATE_LIMIT_BROWSER_IP") or "1200/minute",
        # Read replica: /stats/* reads go to this hot standby (writes and the fold stay on DATABASE_URL).
        "EVENTSAPP_ANALYTICS_DATABASE_URL": normalize_database_url(analytics_url) if (
            analytics_url := env.get("EVENTSAPP_ANALYTICS_DATABASE_URL", "").strip()) else None,
        # The embedded PostgreSQL's settings over the ones sized from the machine (embedded_pg).
        "EVENTSAPP_EMBEDDED_PG_SETTINGS": _pg_settings(env, "EVENTSAPP_EMBEDDED_PG_SETTINGS"),
        # Group commit of SDK requests: events per shared transaction (0: each request commits alone), and
        # how long the committer waits for more requests once one is queued (0: it takes those already
        # waiting, which pile up during the previous commit; measured faster than 2 ms on 2 loaded cores).
        "EVENTSAPP_GROUP_COMMIT_EVENTS": _int(env, "EVENTSAPP_GROUP_COMMIT_EVENTS", 1000),
        "EVENTSAPP_GROUP_COMMIT_WAIT_MS": _int(env, "EVENTSAPP_GROUP_COMMIT_WAIT_MS", 0),
    }


def parse_origins(text: str) -> tuple[str, ...]:
    """``https://app.example.com, http://localhost:3000`` -> normalised origins (as browsers send them)."""
    origins = []
    for item in text.replace(",", " ").split():
        origin = item.strip().rstrip("/").lower()
        if origin and origin not in origins:
            origins.append(origin)
    return tuple(origins)


def _pg_settings(env: Mapping[str, str], name: str) -> dict[str, str | None]:
    from .embedded_pg import parse_settings

    try:
        return parse_settings(env.get(name) or "")
    except ValueError as exc:
        raise SystemExit(f"{name}: {exc}") from None


# UTF-8 whatever PGCLIENTENCODING says: the write path sends COPY data as UTF-8 bytes.
ENGINE_OPTIONS: dict[str, Any] = {"pool_pre_ping": True, "client_encoding": "utf8"}


def flask_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings for Flask and its extensions, derived from ours."""
    return {
        "MAX_CONTENT_LENGTH": settings["EVENTSAPP_MAX_BODY_BYTES"],
        "SQLALCHEMY_ENGINE_OPTIONS": {**ENGINE_OPTIONS, "pool_size": 10, "max_overflow": 10},
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "API_TITLE": "eventsapp",
        "API_VERSION": "1.0",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "docs",
        "OPENAPI_SWAGGER_UI_URL": "/docs-assets/",
        "JSON_SORT_KEYS": False,
    }
