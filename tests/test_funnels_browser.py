"""The dashboard's Funnel panel in a real browser (Playwright driving Debian's chromium) against the API.

The panel must draw what /stats/funnel answers for the page's range, timezone and the steps, window and
order picked, and that answer must match the independent computation in tests/test_funnels.py.
"""
from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone

import pytest
import requests

from test_dashboard_browser import browser, page  # noqa: F401  (fixtures: chromium, a fresh page)
from test_funnels import event, reference

pytestmark = pytest.mark.slow

FIRST, LAST = date(2026, 3, 20), date(2026, 3, 31)  # crosses Europe's spring DST change
STEPS = ["app_open", "add_to_cart", "purchase"]


def sample_events(seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    events = []
    for u in range(120):
        at = datetime(2026, 3, 20, 6, tzinfo=timezone.utc) + timedelta(minutes=rng.randrange(12 * 1440))
        for kind in STEPS:
            if kind != "app_open" and rng.random() < 0.45:
                break
            at += timedelta(minutes=rng.choice((5, 40, 300, 2000)))
            events.append(event(f"user-{u}", at, kind, platform=rng.choice(["ios", "android", "web"])))
        events.append(event(f"user-{u}", at + timedelta(minutes=3), "view_item"))
    return events


@pytest.fixture
def funnel_sample(client):
    events = sample_events()
    response = client.post("/events", json=events)
    assert response.status_code == 201, response.get_json()
    assert client.get("/stats/summary?from=2026-01-01&to=2026-01-01").status_code == 200  # fold once
    return events


def wait_for_funnel(page, **expected: str) -> None:
    """Wait until the panel shows the answer to a request holding ``expected`` (later changes win)."""
    page.wait_for_function(
        """(expected) => {
            const panel = document.getElementById('funnel-panel');
            if (panel.dataset.state === 'error') return true;
            if (panel.dataset.state === 'loading' || !panel.dataset.query) return false;
            const q = new URLSearchParams(panel.dataset.query);
            return Object.entries(expected).every(([k, v]) => q.get(k) === v);
        }""", arg=expected, timeout=30_000)
    assert page.get_attribute("#funnel-panel", "data-state") in ("ready", "empty"), \
        page.text_content("#funnel-message")


def bars(page) -> list[dict]:
    return page.eval_on_selector_all("#funnel-bars .funnel-bar", """els => els.map(e => ({
        step: Number(e.dataset.step), users: Number(e.dataset.users), from_previous: Number(e.dataset.fromPrevious),
        median: e.dataset.median === '' ? null : Number(e.dataset.median)}))""")


def funnel_api(base: str, **params) -> list[dict]:
    query = [("from", FIRST.isoformat()), ("to", LAST.isoformat()), ("tz", params.pop("tz"))]
    query += [("step", f"event_type:{s}") for s in STEPS] + list(params.items())
    response = requests.get(f"{base}/stats/funnel", params=query, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_funnel_panel_draws_the_api_answer_and_follows_its_controls(app, funnel_sample, live_server, page):
    tz = "Europe/Berlin"
    page.goto(f"{live_server}/dashboard?from={FIRST}&to={LAST}&tz={tz}")
    wait_for_funnel(page, window="86400", order="ordered")
    # Step pickers offer the event types seen, and start with the shop funnel.
    options = page.eval_on_selector("#funnel-steps select", "s => [...s.options].map(o => o.value)")
    assert options == sorted({"app_open", "add_to_cart", "purchase", "view_item"})
    assert [page.input_value(f"#funnel-steps li:nth-child({i}) select") for i in (1, 2, 3)] == STEPS

    for i, (window, order) in enumerate([("86400", "ordered"), ("604800", "ordered"), ("3600", "any")]):
        if i:
            page.select_option("#funnel-window", window)
            page.select_option("#funnel-order", order)
            wait_for_funnel(page, window=window, order=order)
        answer = funnel_api(live_server, tz=tz, window=window, order=order)
        expected = reference(funnel_sample, first=FIRST, last=LAST, tz=tz,
                             steps=[f"event_type:{s}" for s in STEPS], window=int(window), order=order)
        assert answer == expected
        shown = bars(page)
        assert [b["users"] for b in shown] == [r["users"] for r in answer]
        assert [b["from_previous"] for b in shown] == [r["from_previous"] for r in answer]
        assert [b["median"] for b in shown] == [r["median_seconds"] for r in answer]
        labels = page.locator("#funnel-bars .funnel-between").all_text_contents()
        assert len(labels) == 2 and all("converted" in text and "median" in text for text in labels)

    # A breakdown adds a table: one row per platform, users per step as the API says.
    page.fill("#funnel-breakdown", "platform")
    page.dispatch_event("#funnel-breakdown", "change")
    wait_for_funnel(page, breakdown="properties.platform")
    assert page.is_visible("#funnel-table")
    answer = funnel_api(live_server, tz=tz, window="3600", order="any", breakdown="properties.platform")
    table = page.eval_on_selector_all("#funnel-table tbody tr", """trs => trs.map(tr => [tr.dataset.breakdown,
        [...tr.querySelectorAll('td[data-users]')].map(td => Number(td.dataset.users))])""")
    expected = {}
    for row in answer:
        expected.setdefault(row["breakdown"] or "", []).append(row["users"])
    assert dict(table) == expected and len(table) == 3
