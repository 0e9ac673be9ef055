"""The rollups are exact: folding the outbox step by step gives the same tables as a rebuild from events."""
from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from eventsapp.ingest import rules
from eventsapp.ingest.service import write_events
from eventsapp.stats.rollups import ROLLUP_TABLES, fold_outbox, rebuild_rollups

UTC = timezone.utc


def _events(seed: int, count: int, start: datetime, days: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
         "occurred_at": (start + timedelta(seconds=rng.randrange(days * 86400))).astimezone(
             timezone(timedelta(minutes=rng.choice([0, 180, -300, 330])))).isoformat(),
         "user_id": f"u{int(rng.paretovariate(1.2)) % 40}", "event_type": rng.choice(["a", "b", "c"]),
         "properties": {}}
        for _ in range(count)
    ]


def _store(engine, events: list[dict]) -> None:
    rows, errors = rules.validate_events(events)
    assert not errors
    with engine.begin() as connection:
        write_events(connection, rows)


def _snapshot(engine) -> dict[str, list]:
    with engine.connect() as connection:
        return {table: sorted(map(tuple, connection.exec_driver_sql(f"SELECT * FROM {table}").all()))
                for table in ROLLUP_TABLES}


@pytest.mark.parametrize("project_tz", ["UTC", "Europe/Kyiv"])
def test_incremental_folds_equal_a_rebuild_after_late_and_duplicate_events(engine, project_tz):
    recent = _events(1, 1500, datetime(2025, 10, 20, tzinfo=UTC), 14)
    late = _events(2, 300, datetime(2025, 9, 1, tzinfo=UTC), 20)  # weeks late, same users: first-seen moves
    random.Random(3).shuffle(recent)
    batches = [recent[:700], recent[700:] + recent[:100], late, late[:50] + recent[200:260]]
    with engine.begin() as connection:
        rebuild_rollups(connection, project_tz)
    folded = 0
    for batch in batches:
        _store(engine, batch)
        with engine.begin() as connection:
            folded += fold_outbox(connection)
    assert folded == 1800  # duplicates never reach the outbox
    incremental = _snapshot(engine)
    with engine.begin() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM rollup_outbox").scalar_one() == 0
        rebuild_rollups(connection, project_tz)
    rebuilt = _snapshot(engine)
    assert incremental == rebuilt
    assert len(rebuilt["rollup_user_first"]) > 10 and sum(r[1] for r in rebuilt["rollup_dau"]) > 100
    # A user's first event really moved earlier through the late batch.
    firsts = dict(rebuilt["rollup_user_first"])
    assert any(first < datetime(2025, 10, 1, tzinfo=UTC) for first in firsts.values())


def test_a_new_databases_first_fold_builds_the_rollups_without_stopping_writers(engine):
    _store(engine, _events(4, 800, datetime(2025, 10, 1, tzinfo=UTC), 10))  # rollups never built
    with engine.connect() as writer:
        writer.begin()
        write_events(writer, rules.validate_events(_events(5, 50, datetime(2025, 10, 5, tzinfo=UTC), 3))[0])
        with engine.connect() as folder:
            with folder.begin():
                # A rebuild would wait for the writer's transaction (it locks the outbox); a build must not.
                folder.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
                assert fold_outbox(folder, "Europe/Kyiv") == 800
        writer.commit()
    with engine.begin() as connection:
        assert fold_outbox(connection) == 50
    folded = _snapshot(engine)
    with engine.begin() as connection:
        rebuild_rollups(connection, "Europe/Kyiv")
    assert folded == _snapshot(engine)


def test_fold_leaves_uncommitted_writes_queued_and_picks_them_up_after_commit(engine):
    with engine.begin() as connection:
        rebuild_rollups(connection, "UTC")
    rows, _ = rules.validate_events(_events(4, 20, datetime(2025, 10, 1, tzinfo=UTC), 2))
    with engine.connect() as writer:
        writer.begin()
        write_events(writer, rows)
        with engine.begin() as connection:
            assert fold_outbox(connection) == 0
        writer.commit()
    with engine.begin() as connection:
        assert fold_outbox(connection) == 20
        assert fold_outbox(connection) == 0


def test_a_fold_with_another_timezone_keeps_the_stored_one_and_warns(engine, caplog, monkeypatch):
    """The project timezone belongs to the database: a process with another EVENTSAPP_TIMEZONE (an import,
    a second server) folds into the stored one and says so, instead of rebuilding back and forth."""
    from eventsapp.stats import rollups

    monkeypatch.setattr(rollups, "_mismatches_warned", set())
    _store(engine, [{"event_id": str(uuid.uuid4()), "occurred_at": "2025-10-01T22:30:00Z", "user_id": "x",
                     "event_type": "a", "properties": {}}])
    with engine.begin() as connection:
        fold_outbox(connection, "UTC")
        built_at = connection.exec_driver_sql("SELECT built_at FROM rollup_meta").scalar_one()
    _store(engine, [{"event_id": str(uuid.uuid4()), "occurred_at": "2025-10-01T22:40:00Z", "user_id": "y",
                     "event_type": "a", "properties": {}}])
    with engine.begin() as connection:
        assert fold_outbox(connection, "Europe/Kyiv") == 1  # folded, not rebuilt
        assert connection.exec_driver_sql("SELECT day::text, users FROM rollup_dau").all() == [("2025-10-01", 2)]
        assert connection.exec_driver_sql("SELECT project_tz, built_at FROM rollup_meta").one() == ("UTC", built_at)
    assert any(r.levelname == "WARNING" and "Europe/Kyiv" in r.getMessage() and "set-timezone" in r.getMessage()
               for r in caplog.records)


def test_cli_rebuild_and_fold(runner, engine):
    _store(engine, _events(5, 50, datetime(2025, 10, 1, tzinfo=UTC), 3))
    result = runner.invoke(args=["rollups", "fold"])
    assert result.exit_code == 0 and "folded 50 queued events" in result.output
    before = _snapshot(engine)
    result = runner.invoke(args=["rollups", "rebuild"])
    assert result.exit_code == 0 and "from 50 events" in result.output
    assert _snapshot(engine) == before


def test_a_big_fold_empties_the_outbox_file_unless_a_writer_is_using_it(engine):
    with engine.begin() as connection:
        rebuild_rollups(connection, "UTC")
    _store(engine, _events(6, 20_000, datetime(2025, 10, 1, tzinfo=UTC), 5))
    rows, _ = rules.validate_events(_events(7, 10, datetime(2025, 10, 1, tzinfo=UTC), 1))
    with engine.connect() as writer:
        writer.begin()
        write_events(writer, rows)  # uncommitted: the fold must neither wait for nor lose these
        with engine.begin() as connection:
            assert fold_outbox(connection) == 20_000
        writer.commit()
    with engine.begin() as connection:
        assert connection.exec_driver_sql("SELECT pg_relation_size('rollup_outbox')").scalar() > 0
        assert fold_outbox(connection) == 10
    _store(engine, _events(8, 20_000, datetime(2025, 10, 1, tzinfo=UTC), 5))
    with engine.begin() as connection:
        assert fold_outbox(connection) == 20_000
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT pg_relation_size('rollup_outbox')").scalar() == 0
    before = _snapshot(engine)
    with engine.begin() as connection:
        rebuild_rollups(connection, "UTC")
    assert _snapshot(engine) == before


def test_concurrent_first_reads_rebuild_without_deadlock(engine):
    """Right after the rollups are emptied, parallel reads all want a rebuild: one does it, none fails."""
    import threading
    from datetime import date

    from eventsapp.stats import queries

    _store(engine, _events(9, 5000, datetime(2025, 10, 1, tzinfo=UTC), 3))
    with engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE rollup_meta")
    errors: list[BaseException] = []
    answers: list[list] = []

    def read() -> None:
        try:
            answers.append(queries.run_read(engine, queries.daily_active_users, project_tz="UTC", timeout_ms=20_000,
                                            from_=date(2025, 10, 1), to=date(2025, 10, 3)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(answers) == 8 and all(answer == answers[0] for answer in answers)
    assert sum(row["dau"] for row in answers[0]) > 0
