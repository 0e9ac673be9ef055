"""Import defects found under attack (issue 18 item 12, issue 12 item 5): bytes that are not UTF-8,
gzip members and trailing bytes, numbers below a double's range, and honest summaries of a stopped
import."""
from __future__ import annotations

import csv
import gzip
import io
import threading
import time

import orjson
import pytest

from conftest import make_event, stored_count
from eventsapp.importer import service, sources as src

HEADER = ["event_id", "occurred_at", "user_id", "event_type", "properties_json"]


def csv_bytes(events: list[dict], header: bool = True) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(HEADER)
    for event in events:
        writer.writerow([event["event_id"], event["occurred_at"], event["user_id"], event["event_type"],
                         orjson.dumps(event.get("properties", {})).decode()])
    return out.getvalue().encode("utf-8")


def stored_ids(engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.exec_driver_sql("SELECT event_id::text FROM events").scalars())


def run(runner, *args: str):
    return runner.invoke(args=["import-csv", *args])


@pytest.fixture
def many_events() -> list[dict]:
    return [make_event(user_id=f"u{i % 50}", event_type="login", properties={"i": i}) for i in range(6000)]


def file_with_bad_byte(tmp_path, events: list[dict], line: int):
    """The events as CSV with an 0xff byte in the event_type of the row on ``line`` (header = line 1)."""
    lines = csv_bytes(events).split(b"\n")
    lines[line - 1] = lines[line - 1].replace(b"login", b"log\xffin")
    path = tmp_path / "latin.csv"
    path.write_bytes(b"\n".join(lines))
    return path


def test_a_byte_that_is_not_utf8_is_reported_on_its_line_and_the_rows_before_it_are_kept(
        runner, engine, tmp_path, many_events):
    path = file_with_bad_byte(tmp_path, many_events, 5001)
    result = run(runner, str(path), "--batch-size", "1000")
    assert result.exit_code == 1
    assert f"{path}:5001: event_type: Holds a byte that is not valid UTF-8 text (0xff" in result.stderr
    # Every valid row before it is committed, as the message (and the README) says; none after it.
    assert stored_ids(engine) == {e["event_id"] for e in many_events[:4999]}
    assert "The 4,999 valid rows before it are committed" in result.stderr
    # The summary counts what was read: the 4,999 good rows and the bad one.
    assert "5,000 rows read, 4,999 inserted" in result.stderr


def test_skip_invalid_sets_a_row_with_a_bad_byte_aside_with_its_bytes(runner, engine, tmp_path, many_events):
    path = file_with_bad_byte(tmp_path, many_events, 5001)
    rejects = tmp_path / "rejects.csv"
    result = run(runner, str(path), "--skip-invalid", "--rejects", str(rejects))
    assert result.exit_code == 0, result.stderr
    assert "6,000 rows read, 5,999 inserted, 0 duplicates, 1 rejected" in result.stdout
    assert stored_ids(engine) == {e["event_id"] for i, e in enumerate(many_events) if i != 4999}
    rejected = list(csv.reader(io.StringIO(rejects.read_bytes().decode("utf-8", "surrogateescape"))))
    assert len(rejected) == 2
    row = dict(zip(rejected[0], rejected[1]))
    assert row["event_id"] == many_events[4999]["event_id"] and row["line"] == "5001"
    # The byte comes back as it was in the source, so the row can be fixed and imported again.
    assert row["event_type"].encode("utf-8", "surrogateescape") == b"log\xffin"
    assert row["error"].startswith("event_type: Holds a byte that is not valid UTF-8 text")


def test_every_gzip_member_is_read(runner, engine, tmp_path):
    events = [make_event() for _ in range(20)]
    path = tmp_path / "members.csv.gz"
    # `cat a.gz b.gz > c.gz` is a valid gzip file of two members (gzip -d reads both).
    path.write_bytes(gzip.compress(csv_bytes(events[:10])) + gzip.compress(csv_bytes(events[10:], header=False)))
    result = run(runner, str(path))
    assert result.exit_code == 0, result.stderr
    assert "20 rows read, 20 inserted" in result.stdout
    assert stored_ids(engine) == {e["event_id"] for e in events}


def test_trailing_bytes_after_gzip_data_are_refused_not_dropped(runner, engine, tmp_path):
    events = [make_event() for _ in range(10)]
    path = tmp_path / "trailing.csv.gz"
    path.write_bytes(gzip.compress(csv_bytes(events)) + b"2ab7c0de,not,gzip\n")
    result = run(runner, str(path))
    assert result.exit_code == 1
    assert "trailing.csv.gz: cannot read" in result.stderr and "not gzip" in result.stderr
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.parametrize("number", ["1e-400", "-2.5E-0330", "0.000001e-999"])
def test_a_number_below_a_doubles_range_is_refused_naming_the_field(runner, client, engine, tmp_path, number):
    event = make_event()
    properties = '{"a": {"b": [1, %s]}}' % number
    path = tmp_path / "tiny.csv"
    path.write_bytes(b"event_id,occurred_at,user_id,event_type,properties_json\n"
                     + f'{event["event_id"]},{event["occurred_at"]},u1,login,"{properties.replace(chr(34), 2 * chr(34))}"\n'.encode())
    result = run(runner, str(path))
    assert result.exit_code == 1
    assert f"{path}:2: properties_json: A number too small for a double" in result.stderr
    # POST /events gives the same verdict on the same text, naming the event and the field.
    body = ('[{"event_id": "%s", "occurred_at": "%s", "user_id": "u1", "event_type": "login", '
            '"properties": %s}]' % (event["event_id"], event["occurred_at"], properties))
    response = client.post("/events", data=body, content_type="application/json")
    assert response.status_code == 422
    assert "too small for a double" in response.json["errors"]["json"]["0"]["properties"][0]
    assert stored_count(engine) == 0


def test_zero_and_small_but_representable_numbers_are_still_stored(runner, engine, tmp_path):
    event = make_event()
    path = tmp_path / "zeros.csv"
    path.write_bytes(b"event_id,occurred_at,user_id,event_type,properties_json\n"
                     + f'{event["event_id"]},{event["occurred_at"]},u1,login,'
                       '"{""z"": 0e-500, ""s"": 1e-300, ""e"": ""see e-400 here""}"\n'.encode())
    result = run(runner, str(path))
    assert result.exit_code == 0, result.stderr
    with engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT properties FROM events").scalar_one()
    assert stored == {"z": 0.0, "s": 1e-300, "e": "see e-400 here"}


def test_an_interrupted_import_reports_the_time_it_ran(engine, tmp_path, many_events):
    path = tmp_path / "events.csv"
    path.write_bytes(csv_bytes(many_events))
    progress_calls = []

    def stop_after_two_batches(rows: int, done: int, total: int | None) -> None:
        progress_calls.append(rows)
        if len(progress_calls) == 2:
            raise KeyboardInterrupt

    started = time.perf_counter()
    with pytest.raises(service.Interrupted) as stopped:
        service.import_sources(engine, src.expand([str(path)]), batch_size=1000,
                               on_progress=stop_after_two_batches)
    wall = time.perf_counter() - started
    totals = stopped.value.totals
    assert totals.rows == 2000
    # The summary's time is the time the import ran (it said 0.00 s), never more than the wall clock.
    assert 0 < totals.elapsed <= wall + 0.01


def test_writers_kept_close_behind_the_fold_finish_with_current_rollups(engine):
    """The writers wait while the rollup fold is behind; a stats read folding the same rows meanwhile
    must neither hang them nor leave a rollup short."""
    from datetime import datetime, timezone

    from eventsapp.importer.pipeline import BatchWriter
    from eventsapp.ingest import rules
    from eventsapp.stats.rollups import fold_outbox

    events = [make_event(user_id=f"u{i % 13}") for i in range(3000)]
    rows, errors = rules.validate_events(events)
    assert not errors
    writer = BatchWriter(engine, "UTC", fold_backlog=100)
    writer.start()
    for start in range(0, len(rows), 250):
        writer.put(rows[start:start + 250])
        with engine.begin() as connection:  # as a /stats read does before it answers
            fold_outbox(connection, "UTC")
    finished = threading.Thread(target=writer.finish)
    finished.start()
    finished.join(120)
    assert not finished.is_alive(), "the writers hung waiting for the fold"
    assert writer.error is None and writer.inserted == len(events)
    with engine.connect() as connection:
        queued, pairs = connection.exec_driver_sql(
            "SELECT (SELECT count(*) FROM rollup_outbox), array_agg(day::text || ' ' || user_id) "
            "FROM rollup_local_day_user").one()
    assert queued == 0
    utc_day = {e["event_id"]: datetime.fromisoformat(e["occurred_at"]).astimezone(timezone.utc).date()
               for e in events}
    assert sorted(pairs) == sorted({f"{utc_day[e['event_id']]} {e['user_id']}" for e in events})
