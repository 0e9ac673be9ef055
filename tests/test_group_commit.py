"""Group commit of SDK requests: concurrent single-event requests share transactions, yet each request
gets a truthful answer only after its events committed, and a failed transaction stores nothing."""
from __future__ import annotations

import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
import requests
import sqlalchemy as sa

from conftest import stored, stored_count
from eventsapp.ingest import rules
from eventsapp.ingest.groupcommit import GroupCommitter

# A database error PostgreSQL raises from a trigger. SQLSTATE 55P03 (lock_not_available) reaches Python
# as an OperationalError, which the API answers 503 + Retry-After, as for an outage.
POISON_TRIGGER = """
CREATE FUNCTION gc_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF starts_with(NEW.user_id, TG_ARGV[0]) THEN
        RAISE EXCEPTION 'poisoned' USING ERRCODE = '55P03';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER gc_poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION gc_poison(:prefix);
"""


@pytest.fixture
def poison(engine):
    """Make every insert of a user_id starting with a prefix fail; removed after the test."""
    def install(prefix: str) -> None:
        assert prefix.isalnum() or prefix == ""  # spliced into DDL (a trigger argument cannot be bound)
        with engine.begin() as connection:
            connection.exec_driver_sql(POISON_TRIGGER.replace(":prefix", f"'{prefix}'"))

    yield install
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER IF EXISTS gc_poison ON events")
        connection.exec_driver_sql("DROP FUNCTION IF EXISTS gc_poison()")


def posthog_event(event_id: str, user: str, when: datetime) -> dict:
    return {"uuid": event_id, "event": "$pageview", "distinct_id": user, "timestamp": when.isoformat(),
            "properties": {"$current_url": "https://app.example.com/p"}}


def row(event_id: str, user: str = "user-1") -> rules.EventRow:
    received = datetime.now(timezone.utc)
    parsed, errors = rules.validate_event(
        {"event_id": event_id, "occurred_at": received.isoformat(), "user_id": user, "event_type": "view",
         "properties": {}}, received)
    assert not errors
    return parsed


def test_concurrent_requests_with_overlapping_events_store_each_once_with_truthful_counts(live_server, engine):
    when = datetime.now(timezone.utc) - timedelta(hours=1)
    pool = [str(uuid.uuid4()) for _ in range(60)]
    chooser = random.Random(16)
    # 240 requests of 1-3 events drawn from 60 ids: most ids are sent by several requests at once.
    requests_events = [[posthog_event(event_id, f"user-{pool.index(event_id) % 7}", when)
                        for event_id in chooser.sample(pool, chooser.randint(1, 3))] for _ in range(240)]
    # Events stored before the burst are duplicates for everyone.
    preexisting = pool[:5]
    first = requests.post(f"{live_server}/batch/",
                          json={"batch": [posthog_event(i, f"user-{pool.index(i) % 7}", when) for i in preexisting]})
    assert first.status_code == 200

    session_local = threading.local()

    def send(events: list[dict]) -> requests.Response:
        session = getattr(session_local, "session", None) or requests.Session()
        session_local.session = session
        body = events[0] if len(events) == 1 else {"batch": events}
        return session.post(f"{live_server}/e/", json=body, timeout=30)

    with ThreadPoolExecutor(max_workers=16) as executor:
        answers = list(executor.map(send, requests_events))

    assert [a.status_code for a in answers] == [200] * len(answers)
    bodies = [a.json() for a in answers]
    for body, events in zip(bodies, requests_events):
        assert body["ingested"] + body["duplicates"] == len(events)
    sent_ids = {event["uuid"] for events in requests_events for event in events}
    # Every id reported stored by exactly one request overall, never by two, and none stored twice.
    assert sum(body["ingested"] for body in bodies) == len(sent_ids - set(preexisting))
    rows = stored(engine)
    assert sorted(r["event_id"] for r in rows) == sorted(sent_ids | set(preexisting))


def test_one_transaction_serves_many_waiting_requests_each_with_its_own_counts(engine):
    committer = GroupCommitter(engine, max_events=1000, max_wait=1.0)
    shared = str(uuid.uuid4())
    batches = [[row(str(uuid.uuid4())), row(shared)] for _ in range(6)]
    start = threading.Barrier(len(batches))

    def submit(rows):
        start.wait()
        return committer.submit(rows)

    with ThreadPoolExecutor(max_workers=len(batches)) as executor:
        results = list(executor.map(submit, batches))

    assert sorted((r.ingested, r.duplicates) for r in results) == [(1, 1)] * 5 + [(2, 0)]
    assert stored_count(engine) == 7
    with engine.connect() as connection:
        transactions = connection.exec_driver_sql("SELECT count(DISTINCT xmin::text) FROM events").scalar_one()
    assert transactions == 1


def test_database_error_in_a_group_fails_every_request_and_stores_nothing(live_server, engine, poison):
    poison("")
    when = datetime.now(timezone.utc)
    bodies = [posthog_event(str(uuid.uuid4()), f"user-{i}", when) for i in range(24)]
    with ThreadPoolExecutor(max_workers=12) as executor:
        answers = list(executor.map(lambda body: requests.post(f"{live_server}/e/", json=body, timeout=30), bodies))
    assert [a.status_code for a in answers] == [503] * len(bodies)
    assert all(a.headers.get("Retry-After") for a in answers)
    assert stored_count(engine) == 0


def test_a_row_the_database_refuses_fails_only_its_own_request(engine, poison):
    poison("poison")
    committer = GroupCommitter(engine, max_events=1000, max_wait=1.0)
    good = [[row(str(uuid.uuid4()), f"user-{i}")] for i in range(4)]
    bad = [row(str(uuid.uuid4()), "user-ok"), row(str(uuid.uuid4()), "poison-1")]
    start = threading.Barrier(len(good) + 1)

    def submit(rows):
        start.wait()
        try:
            return committer.submit(rows)
        except sa.exc.OperationalError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(good) + 1) as executor:
        results = list(executor.map(submit, good + [bad]))

    assert [(r.ingested, r.duplicates) for r in results[:-1]] == [(1, 0)] * len(good)
    assert isinstance(results[-1], sa.exc.OperationalError)
    # Nothing of the refused request, not even its valid event, is stored.
    assert sorted(r["user_id"] for r in stored(engine)) == sorted(f"user-{i}" for i in range(len(good)))


def test_a_deleted_users_late_sdk_retry_is_dropped_through_group_commit(client, engine):
    when = datetime.now(timezone.utc) - timedelta(hours=1)
    old = posthog_event(str(uuid.uuid4()), "u-gone", when)
    assert client.post("/e/", json=old).json["ingested"] == 1
    assert client.delete("/users/u-gone").status_code == 200
    # The SDK retries the same event after the deletion: dropped, yet a success (it must not retry forever).
    retry = client.post("/e/", json=old)
    assert (retry.status_code, retry.json["ingested"], retry.json["duplicates"]) == (200, 0, 1)
    newer = posthog_event(str(uuid.uuid4()), "u-gone", datetime.now(timezone.utc) + timedelta(minutes=1))
    assert client.post("/e/", json=newer).json["ingested"] == 1
    assert [r["event_id"] for r in stored(engine)] == [newer["uuid"]]


def test_concurrent_small_post_events_batches_store_each_once_and_answer_201_only_when_all_new(
        live_server, engine):
    from conftest import make_event

    pool = [make_event(user_id=f"user-{i % 9}") for i in range(40)]
    chooser = random.Random(7)
    batches = [chooser.sample(pool, chooser.randint(1, 4)) for _ in range(120)]
    local = threading.local()

    def send(batch: list[dict]) -> requests.Response:
        local.session = getattr(local, "session", None) or requests.Session()  # keep-alive, as SDKs do
        return local.session.post(f"{live_server}/events", json=batch, timeout=30)

    with ThreadPoolExecutor(max_workers=12) as executor:
        answers = list(executor.map(send, batches))

    bodies = [a.json() for a in answers]
    for answer, body, batch in zip(answers, bodies, batches):
        assert answer.status_code == (201 if body["duplicates"] == 0 else 200)
        assert body["ingested"] + body["duplicates"] == len(batch)
    sent = {event["event_id"] for batch in batches for event in batch}
    assert sum(body["ingested"] for body in bodies) == len(sent)
    assert sorted(r["event_id"] for r in stored(engine)) == sorted(sent)
