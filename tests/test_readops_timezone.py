"""The project timezone is a property of the database: stored once, never changed implicitly by a
process with another EVENTSAPP_TIMEZONE (a server, an import), changed only by `flask rollups set-timezone`,
which rebuilds. `flask rollups rebuild` is exact and keeps the stored timezone."""
from __future__ import annotations

import csv
import json
import random
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from eventsapp import create_app
from eventsapp.extensions import db
from eventsapp.importer import service as importer, sources as src
from eventsapp.ingest import rules
from eventsapp.ingest.service import write_events
from eventsapp.stats import rollups
from eventsapp.stats.rollups import ROLLUP_TABLES, fold_outbox, rebuild_rollups

UTC = timezone.utc


def _events(seed: int, count: int) -> list[dict]:
    rng = random.Random(seed)
    start = datetime(2025, 10, 20, tzinfo=UTC)
    return [{"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
             "occurred_at": (start + timedelta(seconds=rng.randrange(6 * 86400))).isoformat(),
             "user_id": f"u{rng.randrange(60)}", "event_type": rng.choice(["a", "b", "c"]), "properties": {}}
            for _ in range(count)]


def _store(engine, events: list[dict]) -> None:
    rows, errors = rules.validate_events(events)
    assert not errors
    with engine.begin() as connection:
        write_events(connection, rows)


def _meta(engine) -> tuple[str, datetime]:
    with engine.connect() as connection:
        return connection.exec_driver_sql("SELECT project_tz, built_at FROM rollup_meta").one()


def _snapshot(engine) -> dict[str, list]:
    with engine.connect() as connection:
        return {table: sorted(map(tuple, connection.exec_driver_sql(f"SELECT * FROM {table}").all()))
                for table in ROLLUP_TABLES}


def _indexes(engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        return connection.exec_driver_sql(
            "SELECT tablename, indexdef FROM pg_indexes WHERE tablename LIKE 'rollup%%' ORDER BY 1, 2").all()


def _expected_dau(engine, tz: str) -> dict[str, int]:
    users: dict[str, set] = defaultdict(set)
    with engine.connect() as connection:
        for occurred_at, user_id in connection.exec_driver_sql("SELECT occurred_at, user_id FROM events"):
            users[occurred_at.astimezone(ZoneInfo(tz)).date().isoformat()].add(user_id)
    return {day: len(ids) for day, ids in users.items()}


def _dau(client, query: str = "") -> dict[str, int]:
    response = client.get(f"/stats/dau?from=2025-10-18&to=2025-10-28{query}")
    assert response.status_code == 200, response.get_json()
    return {row["date"]: row["dau"] for row in response.get_json() if row["dau"]}


@pytest.fixture
def warnings_seen(monkeypatch) -> list[str]:
    """Messages of WARNINGs from the rollups module (each mismatch warns once per process: reset it)."""
    seen: list[str] = []
    monkeypatch.setattr(rollups, "_mismatches_warned", set(), raising=False)
    monkeypatch.setattr(rollups.log, "warning", lambda message, *args, **_: seen.append(message % args))
    return seen


def test_a_process_with_another_timezone_warns_and_uses_the_stored_one_without_rebuilding(engine, client,
                                                                                           warnings_seen):
    _store(engine, _events(1, 400))
    with engine.begin() as connection:
        fold_outbox(connection, "UTC")
    stored = _meta(engine)
    assert stored[0] == "UTC"
    other = create_app({"TESTING": True, "DATABASE_URL": engine.url.render_as_string(hide_password=False),
                        "EVENTSAPP_TIMEZONE": "Asia/Tokyo", "EVENTSAPP_AUTH": "off"})
    try:
        assert other.config["EVENTSAPP_TIMEZONE"] == "UTC"
        assert any("Asia/Tokyo" in m and "UTC" in m and "set-timezone" in m for m in warnings_seen), warnings_seen
        _store(engine, _events(2, 50))
        assert _dau(other.test_client()) == _expected_dau(engine, "UTC")  # default tz: the stored one
    finally:
        with other.app_context():
            db.engine.dispose()
    assert _meta(engine) == stored  # never rebuilt


def test_an_import_with_another_timezone_folds_into_the_stored_one_without_rebuilding(engine, tmp_path,
                                                                                       warnings_seen):
    _store(engine, _events(3, 300))
    with engine.begin() as connection:
        fold_outbox(connection, "Europe/Kyiv")
    stored = _meta(engine)
    path = tmp_path / "events.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["event_id", "occurred_at", "user_id", "event_type", "properties_json"])
        for event in _events(4, 3000):
            writer.writerow([event["event_id"], event["occurred_at"], event["user_id"], event["event_type"], "{}"])
    # An import run whose EVENTSAPP_TIMEZONE differs (the plain `flask import-csv` hands it over as is).
    result = importer.import_sources(engine, src.expand([str(path)]), project_tz="America/New_York")
    assert result.totals.inserted == 3000
    assert _meta(engine) == stored
    assert any("America/New_York" in m for m in warnings_seen), warnings_seen
    folded = _snapshot(engine)
    with engine.begin() as connection:
        rebuild_rollups(connection, "Europe/Kyiv")
    assert _snapshot(engine) == folded  # exact, for the stored timezone


def test_set_timezone_rebuilds_for_the_new_timezone_and_reads_follow_it(engine, client, runner, warnings_seen):
    _store(engine, _events(5, 500))
    assert _dau(client) == _expected_dau(engine, "UTC")  # the first read records the app's timezone
    result = runner.invoke(args=["rollups", "set-timezone", "Asia/Kolkata"])
    assert result.exit_code == 0, result.output
    assert "UTC -> Asia/Kolkata" in result.output and "from 500 events" in result.output
    assert _meta(engine)[0] == "Asia/Kolkata"
    with engine.connect() as connection:
        rollup_dau = {day.isoformat(): users for day, users in connection.exec_driver_sql("SELECT * FROM rollup_dau")}
    assert rollup_dau == _expected_dau(engine, "Asia/Kolkata")
    # This app still has EVENTSAPP_TIMEZONE=UTC: it answers in the stored timezone, with a warning.
    _store(engine, _events(6, 40))
    assert _dau(client) == _expected_dau(engine, "Asia/Kolkata")
    assert any("Asia/Kolkata" in m for m in warnings_seen)
    assert _dau(client, "&tz=UTC") == _expected_dau(engine, "UTC")


def test_set_timezone_refuses_an_unknown_name_and_changes_nothing(engine, runner):
    _store(engine, _events(7, 20))
    with engine.begin() as connection:
        fold_outbox(connection, "UTC")
    stored = _meta(engine)
    for refused in ("Mars/Base", "CET", "localtime"):  # unknown, an abbreviation PostgreSQL reads as +01, a file
        result = runner.invoke(args=["rollups", "set-timezone", refused])
        assert result.exit_code == 2 and refused in result.output
        assert _meta(engine) == stored


def test_rebuild_keeps_the_stored_timezone_and_equals_the_folded_rollups(engine, runner, warnings_seen):
    _store(engine, _events(8, 2000))
    with engine.begin() as connection:
        fold_outbox(connection, "America/St_Johns")  # a half-hour offset with DST
    folded = _snapshot(engine)
    indexes = _indexes(engine)
    result = runner.invoke(args=["rollups", "rebuild"])  # this app's EVENTSAPP_TIMEZONE is UTC
    assert result.exit_code == 0, result.output
    assert "America/St_Johns" in result.output and "from 2000 events" in result.output
    assert _meta(engine)[0] == "America/St_Johns"
    assert _snapshot(engine) == folded
    assert _indexes(engine) == indexes  # dropped for the load, all back (reads' plans depend on them)
    _store(engine, _events(9, 300))  # the rebuilt tables keep folding exactly (ON CONFLICT needs the keys)
    with engine.begin() as connection:
        fold_outbox(connection)
    folded = _snapshot(engine)
    with engine.begin() as connection:
        rebuild_rollups(connection, "America/St_Johns")
    assert _snapshot(engine) == folded
