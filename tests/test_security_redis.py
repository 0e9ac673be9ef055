"""Two server processes with Redis rate-limit storage spend one budget per client."""

from __future__ import annotations

import uuid

import pytest
import requests

from faultproc import EmbeddedPostgres, ServerProcess

REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def redis_db():
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield client, prefix
    for key in client.scan_iter(match=f"*{prefix}*"):
        client.delete(key)


def test_two_processes_share_one_budget_through_redis(redis_db, tmp_path):
    _, prefix = redis_db
    pg = EmbeddedPostgres()
    # The limiter's key prefix keeps this run's counters apart from any other user of this Redis db.
    env = {
        "EVENTSAPP_RATELIMIT_STORAGE_URI": REDIS_URL,
        "EVENTSAPP_RATE_LIMIT_INGEST": "4/minute",
        "EVENTSAPP_RATELIMIT_KEY_PREFIX": prefix,
    }
    first = ServerProcess(tmp_path, pg.data_dir, **env).wait_ready()
    second = ServerProcess(tmp_path, pg.data_dir, **env).wait_ready()
    try:
        event = {"event_id": None, "occurred_at": "2026-01-01T00:00:00Z", "user_id": "u", "event_type": "t"}
        statuses = []
        for server in (first, second, first, second, first, second):
            body = [dict(event, event_id=str(uuid.uuid4()))]
            statuses.append(requests.post(server.url + "/events", json=body, timeout=30).status_code)
        assert statuses == [201, 201, 201, 201, 429, 429]
    finally:
        first.terminate()
        second.terminate()
        pg.close()
