"""CSV import and ``POST /events`` give the same verdict, field by field, on the same inputs.

Each case is one event as text: four string fields and the properties JSON text, which the CSV file
carries in ``properties_json`` and the HTTP body carries verbatim as ``properties``.
"""
from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from conftest import stored_count

RECENT = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()

BIG_INTEGERS = '{"big": 123456789012345678901234567890, "below_i64": -9223372036854775809, "u64": 18446744073709551615}'

# (case id, event_id, occurred_at, user_id, event_type, properties JSON text or None for none)
CASES = [
    ("valid", None, RECENT, "u1", "login", '{"plan": "pro", "n": 3, "ok": true, "p": 1.5}'),
    ("valid without properties", None, RECENT, "u1", "login", None),
    ("event_id not a uuid", "not-a-uuid", RECENT, "u1", "login", "{}"),
    ("event_id empty", "", RECENT, "u1", "login", "{}"),
    ("event_id in braces", "{12345678-1234-5678-1234-567812345678}", RECENT, "u1", "login", "{}"),
    ("event_id upper case", "A0B1C2D3-1234-4678-9234-567812345678", RECENT, "u1", "login", "{}"),
    ("occurred_at words", None, "yesterday", "u1", "login", "{}"),
    ("occurred_at empty", None, "", "u1", "login", "{}"),
    ("occurred_at before 1970", None, "1969-12-31T23:59:59Z", "u1", "login", "{}"),
    ("occurred_at far future", None, "2999-01-01T00:00:00+00:00", "u1", "login", "{}"),
    ("occurred_at month 13", None, "2025-13-01T00:00:00Z", "u1", "login", "{}"),
    ("occurred_at naive is utc", None, "2025-08-01T12:00:00", "u1", "login", "{}"),
    ("occurred_at odd offset", None, "2025-08-01T12:00:00+05:45", "u1", "login", "{}"),
    ("user_id empty", None, RECENT, "", "login", "{}"),
    ("user_id too long", None, RECENT, "x" * 257, "login", "{}"),
    ("user_id longest", None, RECENT, "ü" * 256, "login", "{}"),
    ("user_id with NUL", None, RECENT, "a\x00b", "login", "{}"),
    ("event_type too long", None, RECENT, "u1", "e" * 129, "{}"),
    ("event_type empty", None, RECENT, "u1", "", "{}"),
    ("properties array", None, RECENT, "u1", "login", "[1, 2]"),
    ("properties string", None, RECENT, "u1", "login", '"text"'),
    ("properties null", None, RECENT, "u1", "login", "null"),
    ("properties NaN", None, RECENT, "u1", "login", '{"x": NaN}'),
    ("properties Infinity nested", None, RECENT, "u1", "login", '{"a": {"b": [1, -Infinity]}}'),
    ("properties NUL escape", None, RECENT, "u1", "login", '{"x": "a\\u0000b"}'),
    ("properties too big", None, RECENT, "u1", "login", orjson.dumps({"x": "y" * 33_000}).decode()),
    ("properties unicode", None, RECENT, "u1", "login", '{"city": "Київ", "emoji": "☕", "esc": "\\u00e9"}'),
    ("properties big integers", None, RECENT, "u1", "login", BIG_INTEGERS),
    ("properties beyond a double", None, RECENT, "u1", "login", '{"x": {"y": 1e400}}'),
    ("several bad fields", "nope", "later", "", "e" * 200, "[]"),
]


def _event_id(case_id: str, given: str | None) -> str:
    return given if given is not None else str(uuid.uuid5(uuid.NAMESPACE_URL, case_id))


def http_verdict(client, case) -> dict[str, list[str]]:
    case_id, event_id, occurred_at, user_id, event_type, properties = case
    fields = [f'"event_id": {orjson.dumps(_event_id(case_id, event_id)).decode()}',
              f'"occurred_at": {orjson.dumps(occurred_at).decode()}',
              f'"user_id": {orjson.dumps(user_id).decode()}',
              f'"event_type": {orjson.dumps(event_type).decode()}']
    if properties is not None:
        fields.append(f'"properties": {properties}')
    response = client.post("/events", data="[{" + ", ".join(fields) + "}]",
                           headers={"Content-Type": "application/json"})
    if response.status_code in (200, 201):
        return {}
    assert response.status_code == 422, response.get_data(as_text=True)
    errors = response.get_json()["errors"]["json"]["0"]
    return {("properties_json" if name == "properties" else name): messages
            for name, messages in errors.items()}


LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<field>[a-z_]+): (?P<message>.*)$")


def csv_verdict(runner, tmp_path, case) -> dict[str, list[str]]:
    case_id, event_id, occurred_at, user_id, event_type, properties = case
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["event_id", "occurred_at", "user_id", "event_type", "properties_json"])
    writer.writerow([_event_id(case_id, event_id), occurred_at, user_id, event_type, properties or ""])
    source = tmp_path / "case.csv"
    source.write_text(out.getvalue(), encoding="utf-8")
    result = runner.invoke(args=["import-csv", str(source)])
    if result.exit_code == 0:
        return {}
    assert result.exit_code == 1, result.output
    verdict: dict[str, list[str]] = {}
    for line in result.stderr.splitlines():
        match = LINE.match(line)
        if match:
            assert match["file"] == str(source) and match["line"] == "2"
            verdict.setdefault(match["field"], []).append(match["message"])
    assert verdict, result.stderr
    return verdict


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_csv_and_http_agree(client, runner, engine, tmp_path, case):
    over_http = http_verdict(client, case)
    stored_over_http = stored_count(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE events, rollup_outbox")
    from_csv = csv_verdict(runner, tmp_path, case)
    assert from_csv == over_http
    assert stored_count(engine) == stored_over_http == (0 if over_http else 1)
    if not over_http:
        return
    for messages in over_http.values():
        assert all(messages)


def test_accepted_values_are_stored_the_same_way(client, runner, engine, tmp_path):
    """The same valid event through either path ends up as the same row."""
    valid = [case for case in CASES if case[0] in ("valid", "event_id upper case", "occurred_at naive is utc",
                                                   "occurred_at odd offset", "properties unicode",
                                                   "properties big integers")]
    query = ("SELECT event_id::text, occurred_at, user_id, event_type, properties "
             "FROM events ORDER BY event_id")
    for case in valid:
        http_verdict(client, case)
    with engine.connect() as connection:
        over_http = connection.exec_driver_sql(query).all()
        connection.exec_driver_sql("TRUNCATE events, rollup_outbox")
        connection.commit()
    for case in valid:
        assert csv_verdict(runner, tmp_path, case) == {}
    with engine.connect() as connection:
        from_csv = connection.exec_driver_sql(query).all()
    assert len(from_csv) == len(valid) and from_csv == over_http


def test_properties_json_that_is_not_json_is_named(runner, engine, tmp_path):
    case = ("broken json", None, RECENT, "u1", "login", '{"a": 1,')
    verdict = csv_verdict(runner, tmp_path, case)
    assert list(verdict) == ["properties_json"]
    assert verdict["properties_json"][0].startswith("Not valid JSON")
    assert stored_count(engine) == 0


def test_integers_beyond_64_bits_are_stored_exactly_over_http_and_from_csv(client, runner, engine, tmp_path):
    case = next(case for case in CASES if case[0] == "properties big integers")
    query = "SELECT properties->>'big', properties->>'below_i64', properties->>'u64' FROM events"
    expected = ("123456789012345678901234567890", "-9223372036854775809", "18446744073709551615")
    assert http_verdict(client, case) == {}
    with engine.begin() as connection:
        assert connection.exec_driver_sql(query).one() == expected
        connection.exec_driver_sql("TRUNCATE events, rollup_outbox")
    assert csv_verdict(runner, tmp_path, case) == {}
    with engine.connect() as connection:
        assert connection.exec_driver_sql(query).one() == expected


def test_a_big_integer_across_a_read_boundary_is_still_stored_exactly(runner, engine, tmp_path):
    """The file is read in 1 MB pieces; a 30-digit number split between two of them is still noticed."""
    from eventsapp.importer.sources import CHUNK

    header = "event_id,occurred_at,user_id,event_type,properties_json\n"
    filler = []
    size = len(header)
    while size < CHUNK - 1000:
        line = f"{uuid.uuid4()},{RECENT},u1,login,\"{{\"\"pad\"\":\"\"{'x' * 60}\"\"}}\"\n"
        filler.append(line)
        size += len(line.encode())
    event_id = str(uuid.uuid4())
    number = "123456789012345678901234567890"

    def content(padding: int) -> bytes:
        pad_line = f"{uuid.uuid4()},{RECENT},u1,login,\"{{\"\"pad\"\":\"\"{'y' * padding}\"\"}}\"\n"
        last = f"{event_id},{RECENT},u1,login,\"{{\"\"big\"\":{number}}}\"\n"
        return (header + "".join(filler) + pad_line + last).encode()

    start = content(0).index(number.encode())
    data = content(CHUNK - 15 - start)  # 15 digits before the boundary, 15 after: neither side has 19
    assert data.index(number.encode()) == CHUNK - 15
    source = tmp_path / "boundary.csv"
    source.write_bytes(data)
    result = runner.invoke(args=["import-csv", str(source), "--quiet"])
    assert result.exit_code == 0, result.output
    with engine.connect() as connection:
        stored = connection.exec_driver_sql(
            "SELECT properties->>'big' FROM events WHERE event_id = %(id)s", {"id": event_id}).scalar_one()
    assert stored == "123456789012345678901234567890"
