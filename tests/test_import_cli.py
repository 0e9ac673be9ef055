"""``flask import-csv`` through the Flask CLI runner, against real PostgreSQL."""
from __future__ import annotations

import csv
import functools
import gzip
import http.server
import io
import threading
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from conftest import make_event, stored_count

HEADER = ["event_id", "occurred_at", "user_id", "event_type", "properties_json"]


def csv_text(events: list[dict], header: list[str] = HEADER) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for event in events:
        values = {**event, "properties_json": orjson.dumps(event.get("properties", {})).decode()}
        writer.writerow([values[column] for column in header])
    return out.getvalue()


def write_csv(path: Path, events: list[dict], header: list[str] = HEADER) -> Path:
    path.write_text(csv_text(events, header), encoding="utf-8")
    return path


def events_in_db(engine) -> dict[str, dict]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT event_id::text, occurred_at, user_id, event_type, properties FROM events").all()
    return {row.event_id: row for row in rows}


def run(runner, *args: str, **kwargs):
    return runner.invoke(args=["import-csv", *args], **kwargs)


@pytest.fixture
def events() -> list[dict]:
    return [make_event(user_id=f"u{i % 7}", event_type=("login", "purchase")[i % 2],
                       properties={"i": i, "name": "Zürich ☕", "ok": i % 3 == 0, "price": i / 4})
            for i in range(50)]


def test_file_import_stores_every_event_with_its_fields(runner, engine, tmp_path, events):
    source = write_csv(tmp_path / "events.csv", events)
    result = run(runner, str(source), "--quiet")
    assert result.exit_code == 0, result.output + result.stderr
    assert "50 rows read, 50 inserted, 0 duplicates, 0 rejected" in result.stdout
    stored = events_in_db(engine)
    assert set(stored) == {event["event_id"] for event in events}
    for event in events:
        row = stored[event["event_id"]]
        assert row.user_id == event["user_id"] and row.event_type == event["event_type"]
        assert row.properties == event["properties"]
        assert row.occurred_at.isoformat() == event["occurred_at"]


def test_columns_in_any_order_and_properties_optional(runner, engine, tmp_path, events):
    reordered = ["properties_json", "user_id", "event_type", "occurred_at", "event_id"]
    write_csv(tmp_path / "a.csv", events[:10], reordered)
    write_csv(tmp_path / "b.csv", events[10:20], ["event_type", "event_id", "occurred_at", "user_id"])
    result = run(runner, str(tmp_path / "a.csv"), str(tmp_path / "b.csv"))
    assert result.exit_code == 0, result.stderr
    stored = events_in_db(engine)
    assert len(stored) == 20
    assert stored[events[3]["event_id"]].properties == events[3]["properties"]
    assert stored[events[15]["event_id"]].properties == {}


def test_extra_column_is_refused_with_its_name(runner, engine, tmp_path, events):
    source = tmp_path / "extra.csv"
    source.write_text(csv_text(events[:3]).replace("properties_json\n", "properties_json,country\n", 1))
    result = run(runner, str(source))
    assert result.exit_code == 1
    assert f"{source}:1: header: unknown column(s) 'country'" in result.stderr
    assert stored_count(engine) == 0


def test_directory_source_takes_matching_files_sorted(runner, engine, tmp_path, events):
    folder = tmp_path / "export"
    folder.mkdir()
    write_csv(folder / "2.csv", events[20:30])
    write_csv(folder / "1.csv", events[:20])
    write_csv(folder / "skip.txt", events[30:])
    result = run(runner, str(folder))
    assert result.exit_code == 0, result.stderr
    assert f"2 sources ({folder / '1.csv'}, {folder / '2.csv'})" in result.stdout
    assert set(events_in_db(engine)) == {e["event_id"] for e in events[:30]}
    result = run(runner, str(folder), "--glob", "*.txt")
    assert result.exit_code == 0, result.stderr
    assert stored_count(engine) == 50


def test_stdin_source(runner, engine, events):
    result = run(runner, "-", input=csv_text(events).encode())
    assert result.exit_code == 0, result.stderr
    assert "<stdin>" in result.stdout
    assert stored_count(engine) == 50


def test_gzip_by_extension_and_by_magic(runner, engine, tmp_path, events):
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(csv_text(events[:25]).encode()))
    (tmp_path / "b.csv").write_bytes(gzip.compress(csv_text(events[25:]).encode()))  # gzip without the name
    result = run(runner, str(tmp_path / "a.csv.gz"), str(tmp_path / "b.csv"))
    assert result.exit_code == 0, result.stderr
    assert set(events_in_db(engine)) == {e["event_id"] for e in events}


def test_gzip_name_without_gzip_data_is_refused(runner, engine, tmp_path, events):
    write_csv(tmp_path / "plain.csv.gz", events)
    result = run(runner, str(tmp_path / "plain.csv.gz"))
    assert result.exit_code == 1
    assert "plain.csv.gz: named .gz but is not gzip data" in result.stderr
    assert stored_count(engine) == 0


@pytest.fixture
def http_folder(tmp_path):
    """A local http.server thread serving ``tmp_path / 'www'``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_url_source_plain_and_gzipped(runner, engine, http_folder, events):
    root, base = http_folder
    write_csv(root / "a.csv", events[:30])
    (root / "b.csv.gz").write_bytes(gzip.compress(csv_text(events[30:]).encode()))
    result = run(runner, f"{base}/a.csv", f"{base}/b.csv.gz", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert set(events_in_db(engine)) == {e["event_id"] for e in events}
    missing = run(runner, f"{base}/nope.csv")
    assert missing.exit_code == 1 and "nope.csv: cannot fetch" in missing.stderr


def test_no_key_rerun_dedupes_by_event_id(runner, engine, tmp_path, events):
    source = write_csv(tmp_path / "events.csv", events + events[:5])  # five repeated inside the file too
    first = run(runner, str(source))
    assert first.exit_code == 0, first.stderr
    assert "55 rows read, 50 inserted, 5 duplicates" in first.stdout
    second = run(runner, str(source))
    assert second.exit_code == 0
    assert "55 rows read, 0 inserted, 55 duplicates" in second.stdout
    assert stored_count(engine) == 50
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM processed_keys").scalar_one() == 0


def test_same_key_same_content_replays_without_touching_the_database(runner, engine, tmp_path, events):
    source = write_csv(tmp_path / "events.csv", events)
    first = run(runner, str(source), "-k", "history-2025")
    assert first.exit_code == 0, first.stderr
    with engine.connect() as connection:
        key = connection.exec_driver_sql(
            "SELECT fingerprint, result, expires_at FROM processed_keys "
            "WHERE kind = 'import' AND key = 'history-2025'"
        ).one()
    assert key.result["inserted"] == 50 and key.result["rows"] == 50 and key.expires_at is None
    assert len(key.fingerprint) == 64
    # Remove the events: a replay must not read the file into the database again.
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM events")
    again = run(runner, str(source), "-k", "history-2025")
    assert again.exit_code == 0, again.stderr
    assert "Already imported under key 'history-2025'" in again.stdout
    assert "50 rows read, 50 inserted" in again.stdout
    assert stored_count(engine) == 0
    # The same bytes gzipped are the same content.
    gz = tmp_path / "events.csv.gz"
    gz.write_bytes(gzip.compress(source.read_bytes()))
    assert "Already imported" in run(runner, str(gz), "-k", "history-2025").stdout


def test_same_key_other_content_exits_2_and_writes_nothing(runner, engine, tmp_path, events):
    write_csv(tmp_path / "a.csv", events[:10])
    write_csv(tmp_path / "b.csv", events[10:])
    assert run(runner, str(tmp_path / "a.csv"), "-k", "k1").exit_code == 0
    result = run(runner, str(tmp_path / "b.csv"), "-k", "k1")
    assert result.exit_code == 2
    assert "'k1'" in result.stderr and "different content" in result.stderr
    assert set(events_in_db(engine)) == {e["event_id"] for e in events[:10]}
    # Also from stdin, which can be read only once.
    result = run(runner, "-", "-k", "k1", input=csv_text(events[10:]).encode())
    assert result.exit_code == 2
    assert stored_count(engine) == 10


def test_bad_row_names_file_line_and_field_counting_multiline_fields(runner, engine, tmp_path, events):
    good = events[:3]
    bad = dict(events[3], occurred_at="2025-13-45T00:00:00Z")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for index, event in enumerate(good + [bad] + events[4:6]):
        # The second event's properties are pretty-printed JSON: one quoted field over 3 lines.
        option = orjson.OPT_INDENT_2 if index == 1 else 0
        properties = {"a": 1} if index == 1 else event["properties"]
        writer.writerow([event["event_id"], event["occurred_at"], event["user_id"], event["event_type"],
                         orjson.dumps(properties, option=option).decode()])
    source = tmp_path / "bad.csv"
    source.write_text(out.getvalue(), encoding="utf-8")
    assert source.read_text().split("\n")[6].startswith(bad["event_id"])  # line 7 as an editor shows it
    result = run(runner, str(source), "--batch-size", "2")
    assert result.exit_code == 1
    assert f"{source}:7: occurred_at: Not a valid ISO-8601 datetime" in result.stderr
    assert "valid rows before it are committed" in result.stderr
    assert "run the same command again" in result.stderr
    # The rows before the bad one are stored, nothing after it.
    assert set(events_in_db(engine)) == {e["event_id"] for e in good}
    assert events_in_db(engine)[good[1]["event_id"]].properties == {"a": 1}


def test_skip_invalid_writes_rejects_and_imports_the_rest(runner, engine, tmp_path, events):
    rows = list(events[:6])
    rows[1] = dict(rows[1], event_id="not-a-uuid")
    rows[4] = dict(rows[4], user_id="", event_type="x" * 129)
    source = write_csv(tmp_path / "mixed.csv", rows)
    rejects = tmp_path / "rejects.csv"
    result = run(runner, str(source), "--skip-invalid", "--rejects", str(rejects))
    assert result.exit_code == 0, result.stderr
    assert "6 rows read, 4 inserted, 0 duplicates, 2 rejected" in result.stdout
    assert set(events_in_db(engine)) == {rows[i]["event_id"] for i in (0, 2, 3, 5)}
    with rejects.open(newline="", encoding="utf-8") as handle:
        rejected = list(csv.DictReader(handle))
    assert [r["line"] for r in rejected] == ["3", "6"]
    assert rejected[0]["event_id"] == "not-a-uuid" and rejected[0]["file"] == str(source)
    assert rejected[0]["error"] == "event_id: Not a valid UUID."
    assert "user_id: Length must be between 1 and 256." in rejected[1]["error"]
    assert "event_type: Length must be between 1 and 128." in rejected[1]["error"]
    assert orjson.loads(rejected[1]["properties_json"]) == rows[4]["properties"]


def test_rejects_needs_skip_invalid(runner, tmp_path, events):
    source = write_csv(tmp_path / "e.csv", events)
    result = run(runner, str(source), "--rejects", str(tmp_path / "r.csv"))
    assert result.exit_code == 2 and "--rejects needs --skip-invalid" in result.output + result.stderr


def test_no_progress_bar_when_not_a_terminal(runner, tmp_path, events):
    source = write_csv(tmp_path / "e.csv", events * 3)
    result = run(runner, str(source), "--batch-size", "5")
    assert result.exit_code == 0
    assert "\r" not in result.stderr and "ETA" not in result.stderr


def test_missing_source_and_empty_file(runner, tmp_path):
    result = run(runner, str(tmp_path / "nope.csv"))
    assert result.exit_code == 1 and "nope.csv: no such file or directory" in result.stderr
    (tmp_path / "empty.csv").write_text("")
    result = run(runner, str(tmp_path / "empty.csv"))
    assert result.exit_code == 1 and "empty.csv:1: the file is empty" in result.stderr


def test_sample_file_quick_start_is_rerunnable(runner, engine):
    sample = Path(__file__).resolve().parent.parent / "data" / "sample_events.csv"
    first = run(runner, str(sample), "-k", "sample-v1", "--quiet")
    assert first.exit_code == 0, first.stderr
    with sample.open(newline="", encoding="utf-8") as handle:
        distinct = {row["event_id"] for row in csv.DictReader(handle)}
    assert stored_count(engine) == len(distinct)
    again = run(runner, str(sample), "-k", "sample-v1", "--quiet")
    assert again.exit_code == 0 and "Already imported" in again.stdout
    assert stored_count(engine) == len(distinct)


def test_awkward_characters_survive_the_trip(runner, engine, tmp_path):
    awkward = ["tab\there", "back\\slash", "\\N", "new\nline", "cr\rlf\r\n", "quote\"s, commas", "ünï ☕ 𝄞",
               "\\."]
    events = [make_event(user_id=text, event_type=text[:128],
                         properties={"v": text, "esc": "C:\\temp\\new", "k\t": [text]})
              for text in awkward]
    source = write_csv(tmp_path / "awkward.csv", events)
    result = run(runner, str(source))
    assert result.exit_code == 0, result.stderr
    stored = events_in_db(engine)
    for event in events:
        row = stored[event["event_id"]]
        assert (row.user_id, row.event_type, row.properties) == (
            event["user_id"], event["event_type"], event["properties"])


def test_rollups_are_current_when_the_import_ends(runner, engine, tmp_path, events):
    source = write_csv(tmp_path / "events.csv", events)
    assert run(runner, str(source), "--batch-size", "7").exit_code == 0
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM rollup_outbox").scalar_one() == 0
        folded = set(connection.exec_driver_sql("SELECT day, user_id FROM rollup_local_day_user").all())
    expected = {(datetime.fromisoformat(e["occurred_at"]).astimezone(timezone.utc).date(), e["user_id"])
                for e in events}
    assert folded == expected


def test_broken_files_are_named_with_their_line(runner, engine, tmp_path, events):
    text = csv_text(events[:4])
    lines = text.split("\n")
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:3] + [lines[3].split(",", 1)[1]] + lines[4:]), encoding="utf-8")
    result = run(runner, str(short))
    assert result.exit_code == 1
    assert f"{short}:4: row: Expected 5 columns as in the header, got 4." in result.stderr

    latin = tmp_path / "latin1.csv"
    latin.write_bytes(text.encode("utf-8") + b"ff" + "é".encode("latin-1") + b",x,y,z,{}\n")
    result = run(runner, str(latin))
    assert result.exit_code == 1 and "not valid UTF-8" in result.stderr

    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(gzip.compress(csv_text(events).encode())[:-30])
    result = run(runner, str(truncated))
    assert result.exit_code == 1 and "cut.csv.gz: cannot read" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_a_key_in_use_by_a_running_import_is_refused(runner, engine, tmp_path, events):
    source = write_csv(tmp_path / "events.csv", events)
    with engine.connect() as other:  # stands in for another import holding the key
        other.exec_driver_sql("SELECT pg_advisory_lock(hashtextextended('import:' || 'busy', 0))")
        result = run(runner, str(source), "-k", "busy")
        other.exec_driver_sql("SELECT pg_advisory_unlock(hashtextextended('import:' || 'busy', 0))")
        other.commit()
    assert result.exit_code == 1 and "Another import with the key 'busy' is running" in result.stderr
    assert stored_count(engine) == 0
    assert run(runner, str(source), "-k", "busy").exit_code == 0
    assert stored_count(engine) == len(events)
