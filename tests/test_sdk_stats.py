"""Events sent through both real SDKs show up in /stats/dau and /stats/top-events."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, time, timedelta, timezone

import requests
from posthog import Posthog
from segment.analytics import Client


def test_sdk_events_are_counted_by_stats(live_server):
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=3), today - timedelta(days=2)]
    sent = []  # (day, user, event_type), what we expect the stats to count
    segment = Client("wk", host=live_server, gzip=True, upload_interval=0.05, max_retries=0)
    posthog = Posthog("phc", host=live_server, gzip=False, flush_interval=0.05, max_retries=0)
    for day_index, day in enumerate(days):
        for user_index in range(3 + day_index):
            when = datetime.combine(day, time(10 + user_index), tzinfo=timezone.utc)
            segment.track(user_id=f"s{user_index}", event="Order Completed", timestamp=when)
            sent.append((day, f"s{user_index}", "Order Completed"))
            posthog.capture("$pageview", distinct_id=f"p{user_index}", timestamp=when)
            sent.append((day, f"p{user_index}", "$pageview"))
        posthog.capture("$pageview", distinct_id="s0", timestamp=datetime.combine(day, time(23), tzinfo=timezone.utc))
        sent.append((day, "s0", "$pageview"))
    segment.flush()
    segment.join()
    posthog.shutdown()

    params = {"from": days[0].isoformat(), "to": days[-1].isoformat(), "tz": "UTC"}
    dau = requests.get(live_server + "/stats/dau", params=params, timeout=30)
    assert dau.status_code == 200, dau.text
    expected_dau = {day.isoformat(): len({user for d, user, _ in sent if d == day}) for day in days}
    assert {row["date"]: row["dau"] for row in dau.json()} == expected_dau

    top = requests.get(live_server + "/stats/top-events", params=params, timeout=30)
    assert top.status_code == 200, top.text
    expected_top = Counter(event_type for _, _, event_type in sent)
    assert {row["event_type"]: row["count"] for row in top.json()} == dict(expected_top)
