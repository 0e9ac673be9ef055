"""write_events, the one function that inserts events, used inside callers' transactions."""
from __future__ import annotations

from datetime import datetime, timezone

from conftest import make_event, stored_count
from eventsapp.ingest import rules
from eventsapp.ingest.service import write_events


def _rows(n: int):
    rows, errors = rules.validate_events([make_event() for _ in range(n)], datetime.now(timezone.utc))
    assert not errors
    return rows


def test_rolled_back_batch_stores_nothing_and_the_connection_still_writes(engine):
    with engine.connect() as connection:
        transaction = connection.begin()
        assert write_events(connection, _rows(3)).ingested == 3
        transaction.rollback()
        with connection.begin():
            assert write_events(connection, _rows(2)).ingested == 2
    assert stored_count(engine) == 2


def test_several_batches_in_one_transaction(engine):
    first = _rows(4)
    with engine.begin() as connection:
        assert write_events(connection, first).ingested == 4
        again = write_events(connection, first[:2] + _rows(1))
    assert (again.ingested, again.duplicates) == (1, 2)
    assert stored_count(engine) == 5


def test_text_with_csv_special_characters_round_trips(engine):
    tricky = 'quote " comma , newline \n tab \t backslash \\ emoji 🎉'
    event = make_event(user_id=tricky, event_type="e,\"x\"", properties={"k": tricky, tricky: [1, None]})
    rows, _ = rules.validate_events([event], datetime.now(timezone.utc))
    with engine.begin() as connection:
        write_events(connection, rows)
    with engine.connect() as connection:
        row = connection.exec_driver_sql("SELECT user_id, event_type, properties FROM events").one()
    assert row.user_id == tricky
    assert row.event_type == 'e,"x"'
    assert row.properties == {"k": tricky, tricky: [1, None]}
