"""A second app on the session's database with browser settings (CORS origins are read at start-up)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from eventsapp import create_app

_SHARED = (
    "TESTING",
    "EVENTSAPP_AUTH",
    "EVENTSAPP_RATE_LIMIT_INGEST",
    "EVENTSAPP_RATE_LIMIT_STATS",
    "EVENTSAPP_RATE_LIMIT_AUTH_FAILURES",
    "EVENTSAPP_DATA_DIR",
)


def browser_app(session_app: Flask, **overrides: Any) -> Flask:
    config = {name: session_app.config[name] for name in _SHARED if name in session_app.config}
    config.update(overrides)
    return create_app(config)
