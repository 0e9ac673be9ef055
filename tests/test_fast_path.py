"""The hot paths of the write path agree with the full rules and the safe write.

``rules.plainly_valid_row`` accepts a subset of what the full checks accept and must store exactly what
they would; ``write_events(expect_new=True)`` tries a plain INSERT and must fall back without losing or
doubling anything; an import's parallel writers must keep "the first row of an event_id wins".
"""
from __future__ import annotations

import csv
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import make_event, stored, stored_count
from eventsapp.importer import service as importer, sources
from eventsapp.ingest import rules
from eventsapp.ingest.service import write_events
from eventsapp.stats.rollups import fold_outbox

NOW = datetime.now(timezone.utc)
WINDOW = rules.TimeWindow(NOW)

# --- plainly_valid_row vs the full checks ------------------------------------------------------------

def _mostly(valid, *others):
    """Each field valid three times in four, so that whole events often are."""
    return st.integers(0, 3).flatmap(lambda pick: valid if pick else st.one_of(*others))


_uuids = st.uuids().map(str)
event_ids = _mostly(
    _uuids, _uuids.map(str.upper), _uuids.map(lambda u: u.replace("-", "")), _uuids.map(lambda u: "{" + u + "}"),
    st.text(max_size=40), st.integers(), st.none(),
)
_instants = st.one_of(st.datetimes(min_value=datetime(1969, 12, 30), max_value=NOW.replace(tzinfo=None)),
                      st.datetimes(min_value=datetime(1969, 12, 30), max_value=datetime(2100, 1, 1)))
_offsets = st.sampled_from(["Z", "+00:00", "+03:00", "-05:30", "+15:59", "-15:59", "+23:59", "-23:00",
                            "+0300", "", "+03:00:30"])
_fractions = st.sampled_from(["", ".1", ".123", ".123456", ".1234567"])
_separators = st.sampled_from(["T", " "])
occurred_ats = _mostly(
    st.builds(lambda d, sep, frac, off: d.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + frac + off,
              _instants, _separators, _fractions, _offsets),
    st.sampled_from([
        (NOW + timedelta(hours=23)).isoformat(), (NOW + timedelta(hours=25)).isoformat(),
        (NOW + timedelta(days=1, minutes=-1)).strftime("%Y-%m-%dT%H:%M:%S-15:00"),
        "1970-01-01T00:00:00Z", "1970-01-01T04:00:00+05:00", "1969-12-31T23:59:59Z",
        "2025-02-30T00:00:00Z", "2025-08-01T24:00:00Z", "2025-08-01T23:59:60Z", "9999-12-31T23:59:59-10:00",
        "2025-08-01", "2025-W31-5", "20250801T120000Z",
    ]),
    st.text(max_size=30), st.integers(), st.none(),
)
_names = _mostly(st.text(min_size=1, max_size=128),
                 st.sampled_from(["", "a\x00b", "\ud800", "é" * 128, "u" * 256, "u" * 257]),
                 st.text(max_size=300), st.integers(), st.none())
_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
properties = _mostly(
    st.one_of(st.just(rules.NO_PROPERTIES), st.dictionaries(st.text(max_size=10), _json, max_size=5)),
    st.just({"k": "v\x00"}), st.just({"blob": "x" * (32 * 1024)}), st.just({"x": rules.NonFiniteNumber("NaN")}),
    st.lists(st.integers(), max_size=3), st.text(max_size=5),
)


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@settings(max_examples=3000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(event_ids, occurred_ats, _names, _names, properties)
def test_the_hot_path_accepts_only_what_the_full_rules_accept_and_stores_the_same(
        event_id, occurred_at, user_id, event_type, props):
    fast = rules.plainly_valid_row(event_id, occurred_at, user_id, event_type, props, WINDOW)
    item = {"event_id": event_id, "occurred_at": occurred_at, "user_id": user_id, "event_type": event_type}
    if props is not rules.NO_PROPERTIES:
        item["properties"] = props
    full, errors = rules._validate_event_collecting_errors(item, NOW)
    if fast is None:
        return
    assert errors == {}, (item, fast)
    assert fast[0] == full[0] and fast[2:] == full[2:]
    assert _instant(fast[1]) == _instant(full[1])


def test_ordinary_events_take_the_hot_path():
    event = make_event(properties={"plan": "pro", "city": "São Paulo", "n": 1.5})
    row = rules.plainly_valid_row(event["event_id"], event["occurred_at"], event["user_id"], event["event_type"],
                                  event["properties"], WINDOW)
    assert row is not None


@pytest.mark.parametrize("occurred_at", [
    "2025-08-01T10:00:00+23:59",  # Python accepts offsets PostgreSQL refuses (past 15:59)
    "2025-08-01T10:00:00-23:00",
    "2025-08-01T10:00:00-15:59",
    "2025-08-01 10:00:00Z",
    "2025-08-01T10:00:00.1234567+02:00",  # Python keeps 6 digits (truncating), PostgreSQL would round
    "2025-08-01T10:00:00.999999+14:00",
    "2025-08-01T10:00:00",  # no offset: UTC
    "2025-08-01T10:00:00+03:00:30",
])
def test_every_accepted_timestamp_is_stored_as_the_instant_python_reads(client, engine, occurred_at):
    event = make_event(occurred_at=occurred_at)
    response = client.post("/events", json=[event])
    assert response.status_code == 201, response.get_json()
    (row,) = stored(engine)
    assert row["occurred_at"] == _instant(occurred_at)


# --- write_events(expect_new=True) -------------------------------------------------------------------


def _rows(events):
    rows, errors = rules.validate_events(events, NOW)
    assert not errors
    return rows


def _rollup_total(engine) -> int:
    with engine.begin() as connection:
        fold_outbox(connection, "UTC")
        return connection.exec_driver_sql("SELECT coalesce(sum(events), 0) FROM rollup_local_day_type").scalar()


@pytest.mark.parametrize("expect_new", [True, False])
def test_a_batch_meeting_stored_events_stores_only_the_new_ones_and_counts_them_once(engine, expect_new):
    old = [make_event() for _ in range(3)]
    with engine.begin() as connection:
        write_events(connection, _rows(old))
    new = [make_event() for _ in range(5)]
    with engine.begin() as connection:
        result = write_events(connection, _rows(new[:2] + old + new[2:]), expect_new=expect_new)
    assert (result.ingested, result.duplicates) == (5, 3)
    assert stored_count(engine) == 8
    assert _rollup_total(engine) == 8  # the outbox queued each new event once


@pytest.mark.parametrize("expect_new", [True, False])
def test_a_repeat_inside_a_batch_is_a_duplicate_and_the_first_wins(engine, expect_new):
    event_id = str(uuid.uuid4())
    batch = [make_event(event_id=event_id, user_id="first"), make_event(),
             make_event(event_id=event_id, user_id="second")]
    with engine.begin() as connection:
        result = write_events(connection, _rows(batch), expect_new=expect_new)
    assert (result.ingested, result.duplicates) == (2, 1)
    assert {row["user_id"] for row in stored(engine)} == {"first", "user-1"}
    assert _rollup_total(engine) == 2


# --- imports with parallel writers -------------------------------------------------------------------


def _write_csv(path: Path, events: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["event_id", "occurred_at", "user_id", "event_type", "properties_json"])
        for event in events:
            writer.writerow([event["event_id"], event["occurred_at"], event["user_id"], event["event_type"], "{}"])
    return path


def _events(count: int) -> list[dict]:
    base = NOW - timedelta(days=3)
    return [{"event_id": str(uuid.uuid4()), "occurred_at": (base + timedelta(seconds=i)).isoformat(),
             "user_id": f"u{i % 97}", "event_type": "view"} for i in range(count)]


def test_a_repeat_far_beyond_the_importers_window_still_leaves_the_first_row_stored(engine, tmp_path):
    events = _events(36_000)
    repeated = dict(events[0], user_id="the-repeat")
    source = _write_csv(tmp_path / "far.csv", events[:35_000] + [repeated] + events[35_000:])
    result = importer.import_sources(engine, sources.expand([str(source)], "*.csv"), batch_size=500)
    assert (result.totals.inserted, result.totals.duplicates) == (36_000, 1)
    with engine.connect() as connection:
        user = connection.exec_driver_sql(
            "SELECT user_id FROM events WHERE event_id = %(id)s", {"id": events[0]["event_id"]}).scalar_one()
    assert user == events[0]["user_id"]
    assert _rollup_total(engine) == 36_000


def test_two_imports_of_overlapping_files_at_once_store_each_event_once(engine, tmp_path):
    events = _events(8_000)
    first = _write_csv(tmp_path / "a.csv", events[:6_000])
    second = _write_csv(tmp_path / "b.csv", list(reversed(events[2_000:])))  # shares 4,000, other order
    results, failures = [], []

    def run(path: Path) -> None:
        try:
            results.append(importer.import_sources(engine, sources.expand([str(path)], "*.csv"), batch_size=250))
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(path,)) for path in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures
    assert sum(result.totals.inserted for result in results) == 8_000
    assert sum(result.totals.duplicates for result in results) == 4_000
    assert {row["event_id"] for row in stored(engine)} == {event["event_id"] for event in events}
    assert _rollup_total(engine) == 8_000
