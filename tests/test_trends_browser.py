"""The dashboard's Trends panel in a real browser (Playwright driving Debian's chromium) against the live
server: lines equal the API's answer and a plain-Python count, the breakdown's `$other` series is last and
muted in the legend, hover reads a bucket's values, the table lists them, compare draws previous lines,
and the panel follows the page's timezone."""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import requests

from tests.test_dashboard_browser import browser, page, sample, wait_for_view  # noqa: F401  (fixtures)


def wait_for_trends(page, renders: int) -> None:
    page.wait_for_function(
        """(n) => { const p = document.getElementById('trends-panel');
                    return p.dataset.state === 'error' || (p.dataset.state === 'ready' && Number(p.dataset.renderCount) >= n); }""",
        arg=renders, timeout=30_000)
    assert page.get_attribute("#trends-panel", "data-state") == "ready", page.text_content("#trends-error")


def renders(page) -> int:
    return int(page.get_attribute("#trends-panel", "data-render-count"))


def lines(page) -> list[dict]:
    return page.eval_on_selector_all("#trends-svg path.trend-line:not(.previous)", """els => els.map(e => ({
        series: e.dataset.series, group: e.dataset.group, values: JSON.parse(e.dataset.values)}))""")


def api_answer(base: str, page) -> list[dict]:
    query = page.get_attribute("#trends-panel", "data-query")
    response = requests.get(f"{base}/stats/trends", params=parse_qsl(query), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def by_series(rows: list[dict]) -> dict[tuple, list]:
    out: dict[tuple, list] = {}
    for row in rows:
        out.setdefault((row["group"], row["breakdown"]), []).append(row["value"])
    return out


def test_trends_panel_draws_the_api_answer(app, sample, live_server, page):
    project_tz = app.config["EVENTSAPP_TIMEZONE"]
    page.goto(f"{live_server}/dashboard")
    wait_for_view(page, tz=project_tz)
    wait_for_trends(page, 1)

    # Default: events per day over the page's range; equal to the API and to a count in plain Python.
    query = dict(parse_qsl(page.get_attribute("#trends-panel", "data-query")))
    assert (query["from"], query["to"], query["measure"]) == (page.input_value("#from"), page.input_value("#to"), "events")
    drawn = lines(page)
    assert len(drawn) == 1
    counts = Counter(datetime.fromisoformat(e["occurred_at"]).astimezone(ZoneInfo(project_tz)).date().isoformat()
                     for e in sample)
    answer = api_answer(live_server, page)
    assert drawn[0]["values"] == [row["value"] for row in answer] == [counts[row["bucket"]] for row in answer]

    # Users by event type, top 5: five ranked lines, then the muted `$other` series last in the legend.
    asked: list[str] = []
    page.on("request", lambda request: "/stats/trends?" in request.url and asked.append(request.url))
    seen = renders(page)
    page.select_option("#trends-measure", "users")
    page.fill("#trends-breakdown", "event_type")
    page.select_option("#trends-limit", "5")
    page.click("#trends-apply")
    page.wait_for_function("(n) => Number(document.getElementById('trends-panel').dataset.renderCount) > n "
                           "&& new URLSearchParams(document.getElementById('trends-panel').dataset.query).get('limit') === '5'",
                           arg=seen, timeout=30_000)
    answer = api_answer(live_server, page)
    expected = by_series(answer)
    drawn = {(line["group"], None if line["group"] != "value" else line["series"]): line["values"] for line in lines(page)}
    assert drawn == expected and len(expected) == 6
    legend = page.eval_on_selector_all("#trends-legend li", "els => els.map(e => [e.dataset.group, e.className])")
    assert [group for group, _ in legend] == ["value"] * 5 + ["other"] and legend[-1][1] == "muted"
    # Leaving the breakdown field by clicking Show (a change and a submit) asks the question once.
    assert sum("limit=5" in url for url in asked) == 1, asked

    # Hover: the read-out shows the bucket under the pointer and every series' value there.
    page.locator("#trends-svg").scroll_into_view_if_needed()
    box = page.locator("#trends-svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] - 20, box["y"] + box["height"] / 2)
    page.wait_for_selector("#trends-tooltip:not([hidden])")
    last_bucket = answer[-1]["bucket"]
    assert page.get_attribute("#trends-tooltip", "data-bucket") == last_bucket
    shown = page.eval_on_selector_all("#trends-tooltip li", "els => els.map(e => e.dataset.value)")
    assert shown == [str(values[-1]) for values in expected.values()]

    # The table lists every bucket.
    page.click("#trends-panel details summary")
    assert page.eval_on_selector_all("#trends-table tbody tr", "els => els.map(e => e.dataset.bucket)") == \
        [row["bucket"] for row in answer[:len(answer) // 6]]

    # Compare: a dashed previous line per series, equal to the API's previous values.
    seen = renders(page)
    page.check("#trends-compare")
    wait_for_trends(page, seen + 1)
    previous = page.eval_on_selector_all("#trends-svg path.trend-line.previous", "els => els.length")
    assert previous == len(by_series(api_answer(live_server, page)))


def test_trends_panel_follows_the_timezone(app, sample, live_server, page):
    page.goto(f"{live_server}/dashboard")
    wait_for_view(page)
    wait_for_trends(page, 1)
    seen = renders(page)
    page.select_option("#tz", "Asia/Tokyo")
    wait_for_view(page, tz="Asia/Tokyo")
    wait_for_trends(page, seen + 1)
    query = dict(parse_qsl(page.get_attribute("#trends-panel", "data-query")))
    assert query["tz"] == "Asia/Tokyo"
    answer = api_answer(live_server, page)
    counts = Counter(datetime.fromisoformat(e["occurred_at"]).astimezone(ZoneInfo("Asia/Tokyo")).date().isoformat()
                     for e in sample)
    assert lines(page)[0]["values"] == [counts[row["bucket"]] for row in answer]
    # A bad parameter is reported in the panel, naming it, not as a broken chart.
    page.select_option("#trends-measure", "sum")
    page.fill("#trends-property", "")
    seen = renders(page)
    page.click("#trends-apply")
    page.wait_for_selector("#trends-error:not([hidden])")
    assert "property" in page.text_content("#trends-error")
    json.dumps(answer)  # the answer is plain JSON
