"""GET /export/events and `flask export-events`: order, filters, gzip, and an exact import round trip."""
from __future__ import annotations

import csv
import gzip
import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from conftest import make_event, stored
from data.generate_events import generate_rows
from eventsapp.ingest.service import write_events
from eventsapp.models import metadata

UTC = timezone.utc


def _tricky_events() -> list[dict]:
    """Every field at its awkward values."""
    base = datetime(2025, 8, 1, 12, tzinfo=UTC)
    return [
        make_event(user_id="ünïcødé 用户 🙂", event_type="Ω \"quoted\", comma", occurred_at="2025-08-01T12:00:00.123456+05:30",
                   properties={"big": 123456789012345678901234567890, "neg": -98765432109876543210,
                               "f": 0.1, "e": 1.5e-7, "nested": {"a": [1, {"b": None, "c": [True, False]}], "é": "ü"},
                               "quote": "say \"hi\"\nnew line,\ttab \\ backslash", "empty": {}}),
        make_event(user_id="plain", event_type="x", occurred_at=(base + timedelta(microseconds=1)).isoformat(),
                   properties={}),
        make_event(user_id="line\nbreak", event_type="y,z", occurred_at="2025-08-01T23:59:59.999999Z",
                   properties={"list": [], "zero": 0, "t": "∑"}),
        # Same instant, different ids: the event_id orders them.
        *[make_event(user_id="tie", event_type="t", occurred_at="2025-08-02T00:00:00Z", properties={"i": i})
          for i in range(4)],
    ]


def _truncate(engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE " + ", ".join(t.name for t in metadata.sorted_tables))


def _key(event: dict) -> tuple:
    return (event["occurred_at"], event["event_id"])


def test_csv_export_then_import_into_an_empty_database_reproduces_every_event(client, runner, engine, tmp_path):
    rows = list(generate_rows(3000, seed=3, start="2025-08-01", days=5, users=80))
    with engine.begin() as connection:
        write_events(connection, rows)
    assert client.post("/events", json=_tricky_events()).status_code == 201
    before = stored(engine, "occurred_at, event_id")

    path = tmp_path / "events.csv.gz"
    result = runner.invoke(args=["export-events", "--from", "2025-07-01", "--to", "2025-08-31",
                                 "--format", "csv", "-o", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"Exported {len(before):,} events" in result.output
    with gzip.open(path, "rt", encoding="utf-8", newline="") as file:
        assert sum(1 for _ in csv.reader(file)) == len(before) + 1

    _truncate(engine)
    result = runner.invoke(args=["import-csv", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    after = stored(engine, "occurred_at, event_id")
    assert after == before          # every field: ids, instants to the microsecond, unicode, big integers


def test_http_export_streams_ndjson_in_order_with_filters_and_timezone(client, engine):
    events = _tricky_events() + [make_event(user_id=f"u{i}", event_type="buy" if i % 3 else "view",
                                            occurred_at=f"2025-08-0{1 + i % 4}T{i % 24:02d}:30:00Z",
                                            properties={"platform": "ios" if i % 2 else "android", "n": i})
                                 for i in range(40)]
    client.post("/events", json=events)
    tz = "Asia/Kolkata"
    params = {"from": "2025-08-02", "to": "2025-08-03", "tz": tz, "segment": ["event_type:buy", "properties.platform=ios"]}
    response = client.get("/export/events", query_string=params)
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    assert 'filename="events-2025-08-02-2025-08-03.ndjson"' in response.headers["Content-Disposition"]
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]

    zone = ZoneInfo(tz)
    def local_day(e):  # noqa: E306
        return datetime.fromisoformat(e["occurred_at"]).astimezone(zone).date().isoformat()
    expected = [e for e in events if "2025-08-02" <= local_day(e) <= "2025-08-03" and e["event_type"] == "buy"
                and e["properties"].get("platform") == "ios"]
    expected.sort(key=lambda e: (datetime.fromisoformat(e["occurred_at"]), e["event_id"]))
    assert expected and [line["event_id"] for line in lines] == [e["event_id"] for e in expected]
    for line, event in zip(lines, expected):
        assert datetime.fromisoformat(line["occurred_at"]) == datetime.fromisoformat(event["occurred_at"])
        assert (line["user_id"], line["event_type"], line["properties"]) == (
            event["user_id"], event["event_type"], event["properties"])


def test_ndjson_lines_are_events_post_events_accepts_unchanged(client, engine):
    events = _tricky_events()
    client.post("/events", json=events)
    before = stored(engine, "occurred_at, event_id")
    body = client.get("/export/events", query_string={"from": "2025-08-01", "to": "2025-08-02"}).get_data(as_text=True)
    exported = [json.loads(line) for line in body.splitlines()]
    _truncate(engine)
    assert client.post("/events", json=exported).status_code == 201
    assert stored(engine, "occurred_at, event_id") == before


def test_gzip_when_the_client_asks_and_csv_format(client):
    client.post("/events", json=_tricky_events())
    params = {"from": "2025-08-01", "to": "2025-08-02", "format": "csv"}
    plain = client.get("/export/events", query_string=params)
    assert plain.headers.get("Content-Encoding") is None and plain.mimetype == "text/csv"
    packed = client.get("/export/events", query_string=params, headers={"Accept-Encoding": "br, gzip;q=0.8"})
    assert packed.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed.headers["Vary"]
    assert gzip.decompress(packed.get_data()) == plain.get_data()
    assert plain.get_data(as_text=True).startswith("event_id,occurred_at,user_id,event_type,properties_json\n")
    refused = client.get("/export/events", query_string=params, headers={"Accept-Encoding": "gzip;q=0"})
    assert refused.headers.get("Content-Encoding") is None


def test_an_empty_range_is_an_empty_body_or_just_the_header(client):
    assert client.get("/export/events", query_string={"from": "2020-01-01", "to": "2020-01-01"}).get_data() == b""
    csv_body = client.get("/export/events", query_string={"from": "2020-01-01", "to": "2020-01-01", "format": "csv"})
    assert csv_body.get_data() == b"event_id,occurred_at,user_id,event_type,properties_json\n"


@pytest.mark.parametrize("params, field", [
    ({"to": "2025-08-01"}, "from"), ({"from": "2025-08-01"}, "to"),
    ({"from": "2025-08-02", "to": "2025-08-01"}, "to"), ({"from": "2025-08-01", "to": "2025-08-02", "format": "xml"}, "format"),
    ({"from": "2025-08-01", "to": "2025-08-02", "tz": "Nowhere/City"}, "tz"),
    ({"from": "2025-08-01", "to": "2025-08-02", "segment": "plan=pro"}, "segment"),
    ({"from": "2025-08-01", "to": "2025-08-02", "limit": "3"}, "limit"),
    ({"from": "2025-08-01", "to": "2025-08-02", "tz": "EST"}, "tz"), ({"from": "0001-01-01", "to": "2025-08-02"}, "from"),
])
def test_bad_parameters_are_400_naming_them(client, params, field):
    response = client.get("/export/events", query_string=params)
    assert response.status_code == 400
    assert field in response.get_json()["errors"]["query"]


def test_cli_writes_stdout_and_refuses_bad_options(runner, client):
    client.post("/events", json=_tricky_events())
    result = runner.invoke(args=["export-events", "--from", "2025-08-01", "--to", "2025-08-02", "--format", "ndjson",
                                 "-o", "-", "--quiet"])
    assert result.exit_code == 0, result.output
    ids = [json.loads(line)["event_id"] for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(ids) == len(_tricky_events())
    for args, hint in ((["--tz", "Mars/Base"], "--tz"), (["--segment", "nope"], "--segment"),
                       (["--to", "2025-07-01"], "--to")):
        bad = runner.invoke(args=["export-events", "--from", "2025-08-01", "--to", "2025-08-02", "-o", "-", *args])
        assert bad.exit_code == 2 and hint in bad.output, bad.output


def test_a_client_that_goes_away_stops_the_export_and_frees_its_connection(client, engine):
    rows = list(generate_rows(20000, seed=5, start="2025-08-01", days=3, users=50))
    with engine.begin() as connection:
        write_events(connection, rows)
    response = client.get("/export/events", query_string={"from": "2025-07-31", "to": "2025-08-05"}, buffered=False)
    first = next(iter(response.response))
    assert first.startswith(b'{"event_id":')
    response.close()   # what the WSGI server does when the client disconnects
    with engine.connect() as connection:
        copies = connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT%%' AND state <> 'idle'").scalar()
    assert copies == 0


def test_a_gzip_client_that_goes_away_stops_the_export_too(client, engine):
    rows = list(generate_rows(20000, seed=6, start="2025-08-01", days=3, users=50))
    with engine.begin() as connection:
        write_events(connection, rows)
    response = client.get("/export/events", query_string={"from": "2025-07-31", "to": "2025-08-05", "format": "csv"},
                          headers={"Accept-Encoding": "gzip"}, buffered=False)
    next(iter(response.response))
    response.close()
    with engine.connect() as connection:
        copies = connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT%%' AND state <> 'idle'").scalar()
    assert copies == 0
