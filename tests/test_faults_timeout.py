"""The statement timeout bounds every analytics query: a slow query answers 503 quickly, and the
connection it used goes back to the pool in working order."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

ROWS = 300_000
QUERIES = [
    "/stats/dau?from=2026-01-01&to=2026-01-30&segment=properties.plan%3Dp1",
    "/stats/top-events?from=2026-01-01&to=2026-01-30&segment=properties.plan%3Dp1",
    "/stats/retention?start_date=2026-01-01&windows=4&segment=properties.plan%3Dp1",
    "/stats/summary?from=2026-01-01&to=2026-01-30&segment=properties.plan%3Dp1",
]


@pytest.fixture
def many_events(engine, client):
    # Build the (empty) rollups first, so the reads below meet only their own query, then write
    # straight into the table (not the write path): this test is about reads over a big table.
    assert client.get(QUERIES[0]).status_code == 200
    with engine.begin() as connection:
        connection.execute(sa.text(f"""
            INSERT INTO events (event_id, occurred_at, user_id, event_type, properties)
            SELECT gen_random_uuid(),
                   timestamptz '2026-01-01' + (i % 30) * interval '1 day' + (i % 86400) * interval '1 second',
                   'u' || (i % 20000), 'e' || (i % 7), jsonb_build_object('plan', 'p' || (i % 3))
            FROM generate_series(1, {ROWS}) AS i"""))
        connection.exec_driver_sql("ANALYZE events")


def test_slow_analytics_queries_are_cancelled_with_503(app, client, many_events, monkeypatch):
    if not any(rule.rule.startswith("/stats/") for rule in app.url_map.iter_rules()):
        pytest.skip("the stats blueprint is not registered in this tree yet")
    monkeypatch.setitem(app.config, "EVENTSAPP_QUERY_TIMEOUT_MS", 1)
    for url in QUERIES:
        started = time.monotonic()
        response = client.get(url)
        elapsed = time.monotonic() - started
        assert response.status_code == 503, (url, response.status_code)
        assert response.headers["Retry-After"] == "5"  # README; the rate limiter no longer overwrites it
        assert "1 ms" in response.get_json()["message"]
        assert elapsed < 5, (url, elapsed)  # cancelled, not run to completion

    monkeypatch.setitem(app.config, "EVENTSAPP_QUERY_TIMEOUT_MS", 60_000)
    answers = [client.get(url) for url in QUERIES]
    assert [answer.status_code for answer in answers] == [200] * len(QUERIES)
    # The answer after the cancelled attempts is the full one, checked against plain Python.
    expected: dict[str, set[str]] = {f"2026-01-{day:02d}": set() for day in range(1, 31)}
    for i in range(1, ROWS + 1):
        if i % 3 == 1:
            expected[f"2026-01-{i % 30 + 1:02d}"].add(f"u{i % 20000}")
    assert {row["date"]: row["dau"] for row in answers[0].get_json()} == {
        day: len(users) for day, users in expected.items()
    }
