"""Request ids, JSON access logs without secrets, and the metrics the README lists."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_event
from eventsapp.observability import JsonFormatter, mask_database_url
from eventsapp.security import auth, keys
from eventsapp.security.limits import limiter

REPO = Path(__file__).resolve().parent.parent


def access_records(caplog, request_id=None):
    return [
        r
        for r in caplog.records
        if r.name == "eventsapp.access" and (request_id is None or r.request_id == request_id)
    ]


def test_request_id_is_generated_and_returned(client):
    first = client.get("/health")
    second = client.get("/health")
    assert len(first.headers["X-Request-ID"]) == 32
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def test_callers_request_id_is_kept_and_unsafe_ones_replaced(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123.x"}).headers["X-Request-ID"] == "abc-123.x"
    for unsafe in ("x" * 200, "evil\"}{json", "a b"):
        returned = client.get("/health", headers={"X-Request-ID": unsafe}).headers["X-Request-ID"]
        assert returned != unsafe and len(returned) == 32


def test_request_id_is_on_error_answers_too(client):
    response = client.post(
        "/events", data="nope", headers={"X-Request-ID": "err-1", "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["X-Request-ID"] == "err-1"
    assert client.get("/no-such-page", headers={"X-Request-ID": "nf-1"}).headers["X-Request-ID"] == "nf-1"


def test_one_access_log_line_per_request_with_the_fields(client, caplog):
    caplog.set_level(logging.INFO, logger="eventsapp.access")
    response = client.post("/events", json=[make_event()], headers={"X-Request-ID": "log-me"})
    assert response.status_code == 201
    records = access_records(caplog, "log-me")
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["method"] == "POST" and line["path"] == "/events" and line["status"] == 201
    assert line["request_id"] == "log-me" and line["level"] == "INFO" and line["logger"] == "eventsapp.access"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert "key_name" in line


def test_access_log_names_the_key_and_never_logs_it(app, client, engine, caplog):
    caplog.set_level(logging.DEBUG)
    secret = keys.create_key(engine, "logged-writer", ["ingest"])
    app.config["EVENTSAPP_AUTH"] = "required"
    auth.clear_cache()
    try:
        ok = client.post(
            "/events",
            json=[make_event()],
            headers={"Authorization": f"Bearer {secret}", "X-Request-ID": "with-key"},
        )
        bad = client.post(
            "/events", json=[make_event()], headers={"X-API-Key": secret + "x", "X-Request-ID": "bad-key"}
        )
    finally:
        app.config["EVENTSAPP_AUTH"] = "off"
        auth.clear_cache()
        limiter.reset()
    assert ok.status_code == 201 and bad.status_code == 401
    assert access_records(caplog, "with-key")[0].key_name == "logged-writer"
    assert access_records(caplog, "bad-key")[0].status == 401
    formatted = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert secret not in formatted and secret[3:15] not in formatted


def test_database_password_is_masked():
    masked = mask_database_url("postgresql+psycopg2://app:s3cret-pw@db.example:5432/events")
    assert "s3cret-pw" not in masked and "***" in masked and "db.example" in masked
    assert "s3cret" not in mask_database_url("postgres://:s3cret@/x?host=/tmp")
    assert mask_database_url("not a url at all :s3cret@") == "(unparsable URL hidden)"


def test_startup_logs_are_json_and_mask_database_url(tmp_path):
    # A separate process, as a user would start it, with a DSN holding a password (never connected to).
    env = {k: v for k, v in os.environ.items()}
    env.update(
        {
            "DATABASE_URL": "postgresql://appuser:hunter2-secret@127.0.0.1:1/eventsdb",
            "EVENTSAPP_AUTH": "off",
            "EVENTSAPP_LOG_LEVEL": "INFO",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", "from eventsapp import create_app; create_app()"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines, "no log lines"
    assert any("appuser:***@127.0.0.1:1/eventsdb" in line["message"] for line in lines)
    assert any(line["level"] == "WARNING" and "EVENTSAPP_AUTH=off" in line["message"] for line in lines)
    assert "hunter2-secret" not in done.stderr + done.stdout


def metric_value(text: str, name: str, labels: str = "") -> float | None:
    prefix = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    return None


def test_metrics_beyond_http(client):
    client.post("/events", json=[make_event(), make_event()])
    batch = [make_event()]
    client.post("/events", json=batch, headers={"Idempotency-Key": "metrics-replay"})
    client.post("/events", json=batch, headers={"Idempotency-Key": "metrics-replay"})
    client.post("/events", json=[make_event(user_id="")])
    text = client.get("/metrics").get_data(as_text=True)
    for result in ("ingested", "duplicate", "rejected"):
        assert metric_value(text, "eventsapp_events_total", f'result="{result}"') is not None, result
    assert metric_value(text, "eventsapp_batch_size_events_count") >= 2
    assert metric_value(text, "eventsapp_idempotent_replays_total") >= 1
    assert (
        metric_value(text, "eventsapp_db_pool_connections_in_use") == 0
    )  # nothing holds one between requests
    assert metric_value(text, "eventsapp_db_pool_size") == 10
    assert "# TYPE eventsapp_import_rows_total counter" in text
    assert "# TYPE eventsapp_rate_limited_total counter" in text


def test_import_rows_metric_reports_completed_imports_from_the_database(client, engine):
    import sqlalchemy as sa

    # As `flask import-csv` records a finished import (another process, so only the database knows).
    with engine.begin() as connection:
        for key, totals in (("a", (90, 7, 3)), ("b", (10, 0, 1))):
            connection.execute(
                sa.text(
                    "INSERT INTO processed_keys (kind, key, fingerprint, status_code, result)"
                    " VALUES ('import', :key, 'f', 0,"
                    " jsonb_build_object('inserted', :i, 'duplicates', :d, 'rejected', :r))"
                ),
                {"key": key, "i": totals[0], "d": totals[1], "r": totals[2]},
            )
    text = client.get("/metrics").get_data(as_text=True)
    assert metric_value(text, "eventsapp_import_rows_total", 'result="inserted"') == 100
    assert metric_value(text, "eventsapp_import_rows_total", 'result="duplicate"') == 7
    assert metric_value(text, "eventsapp_import_rows_total", 'result="rejected"') == 4


def test_pool_in_use_gauge_counts_checked_out_connections(app, engine, client):
    with engine.connect():
        text = client.get("/metrics").get_data(as_text=True)
    assert metric_value(text, "eventsapp_db_pool_connections_in_use") >= 1


def test_grafana_dashboard_queries_only_metrics_the_app_exports(client):
    import re

    client.get("/health")  # so the per-request HTTP series exist
    client.post("/events", json=[make_event()])
    exported = client.get("/metrics").get_data(as_text=True)
    series = {
        line.split("{")[0].split(" ")[0]
        for line in exported.splitlines()
        if line and not line.startswith("#")
    }
    labels = set(re.findall(r"[{,]([a-z_]+)=", exported))
    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 10
    used = {name for expr in exprs for name in re.findall(r"\b((?:eventsapp|flask|process)_[a-z_]+)\b", expr)}
    assert used and used <= series, used - series
    for expr in exprs:  # "by (...)" may only name labels the app sets (job comes from Prometheus)
        for group in re.findall(r"by \(([^)]*)\)", expr):
            assert {name.strip() for name in group.split(",")} - {"le", "job", "instance"} <= labels, expr
