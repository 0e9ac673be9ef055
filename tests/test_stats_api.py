"""Stats endpoints as a client sees them: parameter errors, read-your-writes, timeouts, OpenAPI."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from conftest import make_event

DAU = "/stats/dau?from=2025-10-01&to=2025-10-31"


@pytest.mark.parametrize(
    ("url", "parameter", "message"),
    [
        (DAU + "&tz=Mars/Base", "tz", "Unknown timezone 'Mars/Base'."),
        (DAU + "&tz=", "tz", "Unknown timezone ''."),
        (DAU + "&segment=plan=pro", "segment", None),
        (DAU + "&segment=event_type:", "segment", None),
        (DAU + "&segment=properties.=x", "segment", None),
        ("/stats/dau?from=2025-10-31&to=2025-10-01", "to", "Must not be before 'from'."),
        ("/stats/dau?from=2024-01-01&to=2025-01-01", "to", None),
        ("/stats/dau?from=2025-10-01", "to", "Missing data for required field."),
        ("/stats/dau?from=2025-10-1x&to=2025-10-31", "from", None),
        ("/stats/dau?from=2025-10-01T00:00:00&to=2025-10-31", "from", None),
        (DAU + "&tz=UTC&colour=red", "colour", "Unknown field."),
        ("/stats/top-events?from=2025-10-01&to=2025-10-31&limit=0", "limit", None),
        ("/stats/top-events?from=2025-10-01&to=2025-10-31&limit=1001", "limit", None),
        ("/stats/top-events?from=2025-10-01&to=2025-10-31&limit=ten", "limit", None),
        ("/stats/retention?start_date=2025-10-01&windows=53", "windows", None),
        ("/stats/retention?start_date=2025-10-01&windows=0", "windows", None),
        ("/stats/retention?start_date=2025-10-01&cohorts=53", "cohorts", None),
        ("/stats/retention?start_date=2025-10-01&window_size=monthly", "window_size", None),
        ("/stats/retention?start_date=2025-10-01&cohort=new", "cohort", None),
        ("/stats/retention?windows=3", "start_date", None),
        ("/stats/summary?from=2025-10-01&to=2025-10-31&segment=event_type:x&segment=bogus", "segment", None),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(client, url, parameter, message):
    response = client.get(url)
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["code"] == 400 and parameter in body["message"]
    assert parameter in body["errors"]["query"]
    if message:
        messages = body["errors"]["query"][parameter]
        flat = messages if isinstance(messages, list) else [m for ms in messages.values() for m in ms]
        assert message in flat


def test_the_longest_allowed_range_is_366_days(client):
    response = client.get("/stats/dau?from=2024-01-01&to=2024-12-31")
    assert response.status_code == 200
    assert len(response.get_json()) == 366


def test_sql_in_parameters_is_just_data(client, engine):
    client.post("/events", json=[make_event(occurred_at="2025-10-05T10:00:00Z", event_type="x'; DROP TABLE events; --")])
    response = client.get("/stats/top-events?from=2025-10-01&to=2025-10-31&segment=event_type:x'; DROP TABLE events; --")
    assert response.get_json() == [{"event_type": "x'; DROP TABLE events; --", "count": 1}]
    prop = client.get("/stats/summary?from=2025-10-01&to=2025-10-31&segment=properties.a' OR '1'='1=1")
    assert prop.status_code == 200 and prop.get_json()["events"] == 0


def test_answers_include_a_write_at_once_even_weeks_late(client):
    day = client.get("/stats/dau?from=2025-10-05&to=2025-10-05")
    assert day.get_json() == [{"date": "2025-10-05", "dau": 0}]
    client.post("/events", json=[make_event(occurred_at="2025-10-05T10:00:00Z", user_id="a")])
    assert client.get("/stats/dau?from=2025-10-05&to=2025-10-05").get_json() == [{"date": "2025-10-05", "dau": 1}]
    assert client.get("/stats/retention?start_date=2025-10-05").get_json() == [
        {"cohort_start_date": "2025-10-05", "size": 1, "w0": 1.0, "w1": 0.0, "w2": 0.0}
    ]
    # A late event moves user a's first-seen day earlier: the cohort of 10-05 loses them at once.
    client.post("/events", json=[make_event(occurred_at="2025-09-01T23:30:00-05:00", user_id="a"),
                                 make_event(occurred_at="2025-10-06T00:00:00Z", user_id="a")])
    assert client.get("/stats/retention?start_date=2025-10-05").get_json()[0]["size"] == 0
    assert client.get("/stats/retention?start_date=2025-09-02&windows=2&window_size=weekly").get_json() == [
        {"cohort_start_date": "2025-09-02", "size": 1, "w0": 1.0, "w1": 0.0}
    ]
    active = client.get("/stats/retention?start_date=2025-10-05&cohort=active").get_json()
    assert active == [{"cohort_start_date": "2025-10-05", "size": 1, "w0": 1.0, "w1": 1.0, "w2": 0.0}]
    assert client.get("/stats/summary?from=2025-10-01&to=2025-10-31&tz=Asia/Kolkata").get_json() == {
        "data_first_date": "2025-09-02", "data_last_date": "2025-10-06", "events": 2, "users": 1,
    }


def test_empty_database_answers(client):
    assert client.get("/stats/summary?from=2025-10-01&to=2025-10-02").get_json() == {
        "data_first_date": None, "data_last_date": None, "events": 0, "users": 0,
    }
    assert client.get("/stats/top-events?from=2025-10-01&to=2025-10-02").get_json() == []
    assert client.get("/stats/retention?start_date=2025-10-01&windows=2&cohorts=2").get_json() == [
        {"cohort_start_date": "2025-10-01", "size": 0, "w0": 0.0, "w1": 0.0},
        {"cohort_start_date": "2025-10-02", "size": 0, "w0": 0.0, "w1": 0.0},
    ]


def test_a_query_over_the_timeout_is_503_with_retry_after(app, client, engine, monkeypatch):
    client.get(DAU)  # fold now, so only the DAU read itself meets the lock below
    monkeypatch.setitem(app.config, "EVENTSAPP_QUERY_TIMEOUT_MS", 200)
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with engine.begin() as connection:
            connection.exec_driver_sql("LOCK TABLE rollup_dau IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        response = client.get(DAU)
    finally:
        release.set()
        holder.join()
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert "200 ms" in response.get_json()["message"]
    assert client.get(DAU).status_code == 200


def test_openapi_documents_every_parameter_and_error(client):
    spec = client.get("/openapi.json").get_json()
    expected = {
        "/stats/dau": {"from", "to", "tz", "segment"},
        "/stats/top-events": {"from", "to", "tz", "segment", "limit"},
        "/stats/retention": {"start_date", "windows", "window_size", "cohort", "cohorts", "tz", "segment",
                              "start", "return", "mode"},
        "/stats/summary": {"from", "to", "tz", "segment"},
    }
    for path, names in expected.items():
        operation = spec["paths"][path]["get"]
        assert {p["name"] for p in operation["parameters"]} == names
        assert all(p.get("description") for p in operation["parameters"])
        assert {"200", "400", "503"} <= set(operation["responses"])
        assert "422" not in operation["responses"]
        assert operation["summary"]
    segment = next(p for p in spec["paths"]["/stats/dau"]["get"]["parameters"] if p["name"] == "segment")
    assert segment["schema"]["type"] == "array"


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("/stats/dau?from=9999-12-01&to=9999-12-31", "to"),
        ("/stats/summary?from=9999-12-31&to=9999-12-31", "from"),
        ("/stats/top-events?from=0001-01-01&to=0001-01-02&tz=Asia/Tokyo", "from"),
        ("/stats/dau?from=0001-01-01&to=0001-01-02&tz=Asia/Tokyo&segment=event_type:x", "from"),
        ("/stats/retention?start_date=9999-12-31", "start_date"),
        ("/stats/retention?start_date=9999-11-01&windows=52&window_size=weekly", "start_date"),
        ("/stats/retention?start_date=0001-01-01&tz=Asia/Tokyo", "start_date"),
        (DAU + "&segment=event_type:%00", "segment"),
        (DAU + "&segment=properties.a=%00", "segment"),
        (DAU + "&segment=properties.a%00=x", "segment"),
        ("/stats/retention?start_date=2025-10-01&segment=event_type:a%00b", "segment"),
        (DAU + "&tz=Europe/Kyiv%00", "tz"),
        (DAU + "&from=2025-09-01", "from"),
        (DAU + "&tz=UTC&tz=Asia/Tokyo", "tz"),
        ("/stats/retention?start_date=2025-10-01&windows=2&windows=3", "windows"),
    ],
)
def test_extreme_dates_nul_and_repeated_parameters_are_400_naming_the_parameter(client, url, parameter):
    """Issue 18.4: these were OverflowError / ValueError 500s, or silently used the first value."""
    response = client.get(url)
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert parameter in body["message"] and parameter in body["errors"]["query"], body


def test_a_segment_may_repeat(client):
    client.post("/events", json=[make_event(occurred_at="2025-10-05T10:00:00Z", event_type="a")])
    response = client.get(DAU + "&segment=event_type:a&segment=properties.plan=pro")
    assert response.status_code == 200 and sum(row["dau"] for row in response.get_json()) == 1


def test_the_widest_allowed_dates_answer(client):
    assert client.get("/stats/dau?from=9999-11-01&to=9999-12-01&tz=Pacific/Kiritimati").status_code == 200
    assert client.get("/stats/dau?from=1900-01-01&to=1900-01-02&tz=Asia/Tokyo&segment=event_type:x").status_code == 200
    assert client.get("/stats/retention?start_date=9999-11-29&windows=3").status_code == 200


def test_retention_windows_that_have_not_ended_are_null(client):
    """Issue 12.5: a window that ends after now is null, not a 0.0 a client would read as nobody returned."""
    from datetime import date, datetime, timedelta, timezone

    today = datetime.now(timezone.utc).date()
    start = today - timedelta(days=2)
    # User a on every day from start to today (today's window has activity but has not ended).
    client.post("/events", json=[make_event(occurred_at=f"{start + timedelta(days=i)}T00:30:00Z", user_id="a")
                                 for i in range(3)])
    daily = client.get(f"/stats/retention?start_date={start}&windows=4&tz=UTC").get_json()
    assert daily == [{"cohort_start_date": start.isoformat(), "size": 1, "w0": 1.0, "w1": 1.0, "w2": None, "w3": None}]
    two = client.get(f"/stats/retention?start_date={start}&windows=2&cohorts=2&tz=UTC").get_json()
    assert [row["w1"] for row in two] == [1.0, None]
    weekly = client.get(f"/stats/retention?start_date={today - timedelta(days=7)}&windows=2&window_size=weekly"
                        "&cohort=active&tz=UTC").get_json()
    assert weekly[0]["w1"] is None and weekly[0]["w0"] == (1.0 if weekly[0]["size"] else 0.0)
    empty = client.get(f"/stats/retention?start_date={date(2025, 1, 1)}&windows=2").get_json()
    assert empty[0]["w0"] == 0.0 and empty[0]["w1"] == 0.0  # ended long ago: an empty cohort is 0.0


def test_openapi_says_what_summary_dates_and_retention_keys_are(client):
    spec = client.get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    summary = schemas["Summary"]["properties"]
    assert {"data_first_date", "data_last_date", "events", "users"} == set(summary)
    assert "whatever the range" in summary["data_first_date"]["description"]
    assert schemas["RetentionRow"]["additionalProperties"] is True
    retention = spec["paths"]["/stats/retention"]["get"]["responses"]["200"]
    assert "null" in retention["description"]
    assert "/stats/timezones" in spec["paths"]
