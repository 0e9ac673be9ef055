"""Each event is stored once, however often and however concurrently it is sent."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests
import sqlalchemy as sa

from conftest import make_event, stored_count


def test_duplicates_inside_one_batch_are_stored_once(client, engine):
    event = make_event()
    twin = dict(event, user_id="someone-else")
    response = client.post("/events", json=[event, make_event(), twin])
    assert response.status_code == 200
    assert response.get_json() == {"ingested": 2, "duplicates": 1}
    with engine.connect() as connection:
        user = connection.execute(
            sa.text("SELECT user_id FROM events WHERE event_id = :id"), {"id": event["event_id"]}
        ).scalar_one()
    assert user == event["user_id"]  # the first occurrence wins


def test_event_id_is_deduplicated_across_batches_in_any_spelling(client, engine):
    event = make_event()
    assert client.post("/events", json=[event]).status_code == 201
    shouted = dict(event, event_id=event["event_id"].upper().replace("-", ""))
    response = client.post("/events", json=[shouted, make_event()])
    assert response.get_json() == {"ingested": 1, "duplicates": 1}
    assert stored_count(engine) == 2


def test_stored_event_keeps_what_was_sent(client, engine):
    event = make_event(occurred_at="2025-08-01T02:30:00+03:00", properties={"plan": "pro", "price": 9.99, "ok": True})
    client.post("/events", json=[event])
    naive = make_event(occurred_at="2025-08-01T02:30:00")
    client.post("/events", json=[naive])
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT event_id::text, occurred_at AT TIME ZONE 'UTC' AS utc, properties FROM events ORDER BY utc")
        ).all()
    assert [r.utc.isoformat() for r in rows] == ["2025-07-31T23:30:00", "2025-08-01T02:30:00"]
    assert rows[0].properties == {"plan": "pro", "price": 9.99, "ok": True}


def test_eight_threads_posting_the_same_batch_store_each_event_once(live_server, engine):
    batch = [make_event(user_id=f"u{i % 7}") for i in range(500)]
    barrier = threading.Barrier(8)

    def send(_):
        barrier.wait()
        return requests.post(f"{live_server}/events", json=batch, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(8)))
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    assert sum(r.json()["ingested"] for r in responses) == 500
    assert sum(r.json()["duplicates"] for r in responses) == 7 * 500
    assert stored_count(engine) == 500


def test_idempotency_key_replays_the_first_response(client, engine):
    batch = [make_event(), make_event()]
    first = client.post("/events", json=batch, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    replay = client.post("/events", json=batch, headers={"Idempotency-Key": "order-42"})
    assert replay.status_code == 201  # the first response, not "200 all duplicates"
    assert replay.get_json() == {"ingested": 2, "duplicates": 0}
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert stored_count(engine) == 2


def test_idempotency_key_with_another_body_is_422_and_stores_nothing(client, engine):
    client.post("/events", json=[make_event()], headers={"Idempotency-Key": "k1"})
    response = client.post("/events", json=[make_event()], headers={"Idempotency-Key": "k1"})
    assert response.status_code == 422
    assert "different request body" in response.get_json()["message"]
    assert stored_count(engine) == 1


def test_idempotency_key_in_flight_is_409(client, engine):
    # A request holding the key keeps this transaction-level lock until it commits.
    with engine.connect() as other:
        other.execute(sa.text("SELECT pg_advisory_lock(hashtextextended('http:' || 'busy-key', 0))"))
        response = client.post("/events", json=[make_event()], headers={"Idempotency-Key": "busy-key"})
        assert response.status_code == 409
        assert "in progress" in response.get_json()["message"]
        other.execute(sa.text("SELECT pg_advisory_unlock_all()"))
        other.commit()
    assert stored_count(engine) == 0
    assert client.post("/events", json=[make_event()], headers={"Idempotency-Key": "busy-key"}).status_code == 201


def test_concurrent_requests_with_one_key_store_once(live_server, engine):
    batch = [make_event() for _ in range(2000)]
    barrier = threading.Barrier(6)

    def send(_):
        barrier.wait()
        return requests.post(f"{live_server}/events", json=batch, headers={"Idempotency-Key": "same"}, timeout=60)

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(send, range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    assert statuses.count(201) >= 1
    fresh = [r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1
    assert stored_count(engine) == 2000


def test_idempotency_keys_expire(client, engine):
    client.post("/events", json=[make_event()], headers={"Idempotency-Key": "short-lived"})
    # The stored key is made already expired rather than waited for.
    with engine.begin() as connection:
        expired = connection.exec_driver_sql(
            "UPDATE processed_keys SET expires_at = now() - interval '1 second' WHERE key = 'short-lived'").rowcount
    assert expired == 1
    response = client.post("/events", json=[make_event()], headers={"Idempotency-Key": "short-lived"})
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers
    assert stored_count(engine) == 2


def test_failed_validation_does_not_consume_the_key(client, engine):
    bad = client.post("/events", json=[make_event(user_id="")], headers={"Idempotency-Key": "fix-and-retry"})
    assert bad.status_code == 422
    good = client.post("/events", json=[make_event()], headers={"Idempotency-Key": "fix-and-retry"})
    assert good.status_code == 201


def test_senders_of_the_same_events_in_opposite_orders_never_deadlock(live_server, engine):
    """Two apps retrying each other's events at once, in other orders: every request succeeds."""
    rounds, size = 6, 400
    statuses, ingested = [], 0
    for _ in range(rounds):
        batch = [make_event() for _ in range(size)]
        barrier = threading.Barrier(2)

        def send(events):
            barrier.wait()
            return requests.post(f"{live_server}/events", json=events, timeout=30)

        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(send, [batch, list(reversed(batch))]))
        statuses += [response.status_code for response in responses]
        ingested += sum(response.json().get("ingested", 0) for response in responses)
    assert set(statuses) <= {200, 201}, statuses
    assert ingested == rounds * size
    assert stored_count(engine) == rounds * size
