"""DELETE /users/{id}: afterwards every analytics answer equals the one a fresh database holding only the
remaining events gives; tombstones keep late retries out; audit rows; `flask users delete`."""
from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from conftest import make_event, stored
from data.generate_events import generate_rows
from eventsapp.ingest.service import write_events
from eventsapp.models import metadata
from eventsapp.stats.rollups import ROLLUP_TABLES, rebuild_rollups

UTC = timezone.utc
# Quarter-hour, half-hour and DST-changing zones: each routes stats through different rollups.
TZS = ("UTC", "Europe/Kyiv", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe")
SEGMENTS = ((), ("event_type:purchase",), ("properties.platform=ios",))
# Two weeks around both autumn DST changes (Europe 26 Oct, USA 2 Nov 2025).
FIRST, LAST = "2025-10-18", "2025-11-04"  # the data: local days Oct 20 .. Nov 2 (offsets reach beyond)


def _rows(count: int = 1500, seed: int = 7) -> list[tuple]:
    return list(generate_rows(count, seed=seed, start="2025-10-20", days=14, users=60))


def _write(engine, rows) -> None:
    with engine.begin() as connection:
        write_events(connection, rows)


def _all_answers(client) -> dict:
    """Every stats endpoint, in every timezone and segment under test."""
    answers = {}
    for tz in TZS:
        for segment in SEGMENTS:
            query = {"tz": tz, "segment": list(segment)}
            rng = {"from": FIRST, "to": LAST, **query}
            for name, params in (("dau", rng), ("top-events", {**rng, "limit": 1000}), ("summary", rng)):
                answers[(name, tz, segment)] = _get(client, f"/stats/{name}", params)
            for window_size, windows, cohorts in (("daily", 5, 6), ("weekly", 2, 2)):
                for cohort in ("first_seen", "active"):
                    params = {"start_date": FIRST, "windows": windows, "cohorts": cohorts,
                              "window_size": window_size, "cohort": cohort, **query}
                    answers[("retention", tz, segment, window_size, cohort)] = _get(client, "/stats/retention",
                                                                                    params)
    return answers


def _get(client, url, params):
    response = client.get(url, query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _rollups(engine) -> dict[str, list]:
    with engine.connect() as connection:
        return {table: connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1, 2").all()
                for table in ROLLUP_TABLES}


def _truncate(engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE " + ", ".join(t.name for t in metadata.sorted_tables))


@pytest.fixture(params=["UTC", "America/New_York"])
def project_tz(request, app):
    saved = app.config["EVENTSAPP_TIMEZONE"]
    app.config["EVENTSAPP_TIMEZONE"] = request.param
    yield request.param
    app.config["EVENTSAPP_TIMEZONE"] = saved


def test_after_deleting_users_every_answer_equals_a_fresh_database_of_the_remaining_events(
        client, runner, engine, project_tz):
    rows = _rows()
    counts: dict[str, int] = {}
    for row in {row[0]: row for row in reversed(rows)}.values():
        counts[row[2]] = counts.get(row[2], 0) + 1
    by_size = sorted(counts, key=lambda user: (-counts[user], user))
    # The heaviest user, a middling one and the lightest: their events share days, buckets and types
    # with others (decrements) and sometimes hold a row alone (removal).
    doomed = [by_size[0], by_size[len(by_size) // 2], by_size[-1]]
    # ... and a bulk request (one statement for several users, who share days and buckets).
    bulk = [by_size[1], by_size[len(by_size) // 4], by_size[3 * len(by_size) // 4], by_size[-2]]
    half = len(rows) // 2
    _write(engine, rows[:half])
    _get(client, "/stats/summary", {"from": FIRST, "to": LAST})   # folds the first half into the rollups
    _write(engine, rows[half:])            # the rest stays queued in the outbox until the deletion

    for user in doomed:
        response = client.delete(f"/users/{user}")
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["events_deleted"] == counts[user]
    result = runner.invoke(args=["users", "delete", *bulk])
    assert result.exit_code == 0 and f"{sum(counts[u] for u in bulk)} events" in result.output, result.output
    doomed += bulk
    after = _all_answers(client)
    rollups_after = _rollups(engine)
    with engine.begin() as connection:
        rebuild_rollups(connection, project_tz)
    assert _rollups(engine) == rollups_after   # the incremental fix-up is exactly a rebuild

    remaining = [row for row in rows if row[2] not in doomed]
    _truncate(engine)
    _write(engine, remaining)
    fresh = _all_answers(client)
    assert after == fresh
    # The deletions changed the answers (the comparison would notice a user left behind).
    assert after[("summary", "UTC", ())]["users"] == len(counts) - len(doomed)
    assert after[("summary", "UTC", ())]["events"] == len({row[0] for row in remaining})


def test_deleted_events_and_queued_rows_are_gone_and_only_that_users(client, engine):
    keep = [make_event(user_id="keep", occurred_at=f"2025-08-0{d}T10:00:00Z") for d in range(1, 4)]
    gone = [make_event(user_id="gone", occurred_at=f"2025-08-0{d}T11:00:00Z") for d in range(1, 4)]
    assert client.post("/events", json=keep + gone).status_code == 201
    response = client.delete("/users/gone")
    assert response.status_code == 200
    body = response.get_json()
    assert body["user_id"] == "gone" and body["events_deleted"] == 3
    assert abs(datetime.fromisoformat(body["deleted_at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert {e["event_id"] for e in stored(engine)} == {e["event_id"] for e in keep}
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM rollup_outbox WHERE user_id = 'gone'").scalar() == 0
    assert client.get("/users/gone").status_code == 404
    summary = _get(client, "/stats/summary", {"from": "2025-08-01", "to": "2025-08-03"})
    assert summary["events"] == 3 and summary["users"] == 1


def test_a_retry_older_than_the_deletion_is_dropped_and_newer_events_are_accepted(client, engine):
    old = [make_event(user_id="u-42", occurred_at="2025-08-01T10:00:00Z"),
           make_event(user_id="u-42", occurred_at=(datetime.now(UTC) - timedelta(seconds=5)).isoformat())]
    assert client.post("/events", json=old, headers={"Idempotency-Key": "k1"}).status_code == 201
    assert client.delete("/users/u-42").status_code == 200

    # The SDK retries the same batch (no key), the client replays it with its key, and an import brings it
    # back through the CSV path's plain INSERT: none of it returns.
    retry = client.post("/events", json=old)
    assert retry.status_code == 200 and retry.get_json() == {"ingested": 0, "duplicates": 2}
    assert client.post("/events", json=old, headers={"Idempotency-Key": "k1"}).status_code == 201
    rows = [(e["event_id"], e["occurred_at"], e["user_id"], e["event_type"], '{"a": 1}') for e in old]
    with engine.begin() as connection:
        assert write_events(connection, rows, expect_new=True).ingested == 0
    assert stored(engine) == []
    assert client.get("/users/u-42").status_code == 404

    # Events that happen after the deletion are new data; other users are untouched by the tombstone.
    new = make_event(user_id="u-42", occurred_at=(datetime.now(UTC) + timedelta(minutes=1)).isoformat())
    other = make_event(user_id="u-43", occurred_at="2025-08-01T10:00:00Z")
    response = client.post("/events", json=[new, other])
    assert response.status_code == 201 and response.get_json() == {"ingested": 2, "duplicates": 0}
    assert sorted(e["event_id"] for e in stored(engine)) == sorted([new["event_id"], other["event_id"]])
    assert _get(client, "/users/u-42", {})["events"] == 1


def test_tombstone_and_audit_keep_a_hash_and_counts_never_the_deleted_data(client, engine):
    events = [make_event(user_id="alice@example.com", properties={"email": "alice@example.com"}) for _ in range(4)]
    client.post("/events", json=events)
    assert client.delete("/users/alice@example.com").status_code == 200
    assert client.delete("/users/nobody").status_code == 404   # unknown: 404, audited all the same
    with engine.connect() as connection:
        audit = connection.exec_driver_sql(
            "SELECT user_hash, requested_by, events_deleted, found FROM deletion_audit ORDER BY id").all()
        tombstones = connection.exec_driver_sql("SELECT user_hash FROM user_tombstones").scalars().all()
        dump = " ".join(
            str(connection.exec_driver_sql(f"SELECT * FROM {table}").all())
            for table in ("deletion_audit", "user_tombstones") + ROLLUP_TABLES + ("rollup_outbox", "events"))
    alice = hashlib.sha256(b"alice@example.com").digest()
    assert [(bytes(a.user_hash), a.requested_by, a.events_deleted, a.found) for a in audit] == [
        (alice, "anonymous", 4, True), (hashlib.sha256(b"nobody").digest(), "anonymous", 0, False)]
    assert alice in {bytes(t) for t in tombstones}
    assert "alice" not in dump


def test_deletion_needs_an_admin_key_and_the_audit_names_it(app, client, engine):
    from eventsapp.security import auth, keys
    from eventsapp.security.limits import limiter

    client.post("/events", json=[make_event(user_id="bob")])
    saved = app.config["EVENTSAPP_AUTH"]
    app.config["EVENTSAPP_AUTH"] = "required"
    auth.clear_cache()
    limiter.reset()
    try:
        reader = keys.create_key(engine, "analyst", ["read"])
        admin = keys.create_key(engine, "dpo", ["admin"])
        assert client.get("/users/bob", headers={"X-API-Key": reader}).status_code == 200
        assert client.get("/users/bob").status_code == 401
        assert client.delete("/users/bob", headers={"X-API-Key": reader}).status_code == 403
        assert client.delete("/users/bob", headers={"X-API-Key": admin}).status_code == 200
    finally:
        app.config["EVENTSAPP_AUTH"] = saved
        auth.clear_cache()
        limiter.reset()
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT requested_by FROM deletion_audit").scalars().all() == ["dpo"]


def test_a_too_long_user_id_is_a_400_naming_it(client):
    response = client.delete("/users/" + "x" * 257)
    assert response.status_code == 400
    assert "user_id" in response.get_json()["errors"]["path"]


def test_cli_deletes_users_from_arguments_and_a_file_with_a_summary(runner, client, engine, tmp_path):
    events = [make_event(user_id=f"u{i % 5}") for i in range(20)]   # u0..u4, 4 events each
    client.post("/events", json=events)
    requests = tmp_path / "requests.txt"
    requests.write_text("u1\n\n  u2  \nu1\nghost\n", encoding="utf-8")
    result = runner.invoke(args=["users", "delete", "u0", "--from-file", str(requests)])
    assert result.exit_code == 0, result.output
    assert "4 users requested: 3 deleted (12 events), 1 not found" in result.output
    assert "ghost" in result.output
    assert sorted({e["user_id"] for e in stored(engine)}) == ["u3", "u4"]
    with engine.connect() as connection:
        audit = connection.exec_driver_sql("SELECT requested_by, events_deleted FROM deletion_audit").all()
    assert len(audit) == 4 and sum(a.events_deleted for a in audit) == 12
    assert all(a.requested_by.startswith("cli:") for a in audit)


def test_cli_without_any_user_id_is_a_usage_error(runner):
    result = runner.invoke(args=["users", "delete"])
    assert result.exit_code == 2


def test_a_deletion_during_concurrent_writes_leaves_nothing_older_than_it(client, engine):
    """Writers keep sending the user's events (both insert paths) while the user is deleted: whatever
    committed before is deleted with the rest, whatever comes after and is older is dropped."""
    import threading

    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(expect_new: bool) -> None:
        try:
            while not stop.is_set():
                at = (datetime.now(UTC) - timedelta(milliseconds=500)).isoformat()
                rows = [(str(uuid.uuid4()), at, "busy", "tick", "{}") for _ in range(50)]
                with engine.begin() as connection:
                    write_events(connection, rows, expect_new=expect_new)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(flag,)) for flag in (True, False)]
    for thread in threads:
        thread.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while datetime.now(UTC) < deadline and client.get("/users/busy").status_code != 200:
            pass
        response = client.delete("/users/busy")
        assert response.status_code == 200
        deleted_at = datetime.fromisoformat(response.get_json()["deleted_at"])
        # Writers go on after the deletion until their events are newer than it (they are stamped 0.5 s old).
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while datetime.now(UTC) < deadline and client.get("/users/busy").status_code != 200:
            pass
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    rows = stored(engine)
    assert response.get_json()["events_deleted"] > 0
    assert all(row["occurred_at"] >= deleted_at for row in rows if row["user_id"] == "busy")
    assert any(row["user_id"] == "busy" for row in rows)       # newer events were accepted
    _get(client, "/stats/summary", {"from": "2020-01-01", "to": "2020-01-01"})   # folds what is queued
    rollups_now = _rollups(engine)
    with engine.begin() as connection:
        rebuild_rollups(connection, "UTC")
    assert _rollups(engine) == rollups_now
