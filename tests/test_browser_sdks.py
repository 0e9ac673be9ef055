"""posthog-js and analytics.js, the real npm packages, in a real Chromium page on another origin.

The page (tests/browser/page.html) loads the packages' own builds from tests/browser/node_modules
(`npm ci` there, from package-lock.json; .ci/run does it) through a static server on a different
origin than the API. Each SDK's events are logged by the page as the SDK hands them to its transport;
the test then checks the database and /stats/* against that log: every event once, none lost, the
right user and type, also for events fired right before a navigation and for requests the SDKs retry.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from browser_apps import browser_app
from conftest import stored
from eventsapp.sdk.service import SEGMENT_NAMESPACE

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
PAGE_DIR = Path(__file__).resolve().parent / "browser"
# posthog-js drops every event of a browser it takes for a bot, as it does headless Chromium's own agent.
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) " "Chrome/131.0.0.0 Safari/537.36"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-blink-features=AutomationControlled",
    f"--user-agent={USER_AGENT}",
]
SEGMENT_TYPES = {
    "identify": "$identify",
    "page": "$page",
    "screen": "$screen",
    "group": "$group",
    "alias": "$alias",
}
DELIVERY_TIMEOUT = 30.0


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(
            f"{reason}; CI must run the browser SDK tests (.ci/run installs chromium and the npm packages)"
        )
    pytest.skip(reason)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def page_port():
    """A static server for the test page: its own origin (another port than the API's)."""
    if not (PAGE_DIR / "node_modules" / "posthog-js").is_dir():
        _unavailable(
            "tests/browser/node_modules is missing: run `npm ci` in tests/browser (needs node and npm)"
        )
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(PAGE_DIR))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def api(app, page_port):
    """The API on its own port, allowing the page origin http://127.0.0.1:PORT (not http://localhost:PORT)."""
    from waitress.server import create_server

    served = browser_app(
        app, EVENTSAPP_CORS_ORIGINS=(f"http://127.0.0.1:{page_port}",), EVENTSAPP_AUTH="required"
    )
    server = create_server(served, host="127.0.0.1", port=0, threads=8)
    threading.Thread(target=server.run, daemon=True).start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(user_agent=USER_AGENT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def key(engine, page_port) -> str:
    """A browser-safe key for the page's origin, as a web developer would paste it into the page."""
    from eventsapp.security import auth, keys

    auth.clear_cache()
    return keys.create_key(
        engine, "web-page", ["ingest"], browser=True, origins=[f"http://127.0.0.1:{page_port}"]
    )


def page_url(port: int, api: str, host: str = "127.0.0.1", **keys: str) -> str:
    query = "&".join(f"{name}={value}" for name, value in {"api": api, **keys}.items())
    return f"http://{host}:{port}/page.html?{query}"


def open_page(page, url: str, *sdks: str) -> None:
    page.goto(url)
    if sdks:
        page.wait_for_function(" && ".join(f"window.sdkReady.{sdk}" for sdk in sdks), timeout=15_000)


def leave(page, port: int, api: str) -> list[list[str]]:
    """Go to a page of the same site without the SDKs (the last unload beacon is logged) and read the log.

    Ending every test this way keeps a page closed at teardown from sending into the next test.
    """
    open_page(page, page_url(port, api))
    return page.evaluate("() => JSON.parse(localStorage.getItem('sent'))")


def expected_rows(sent: list[list[str]]) -> dict[str, tuple[str, str]]:
    """event_id -> (user_id, event_type) of what the page sent, computed as the README's mapping says."""
    rows = {}
    for sdk, message_id, kind, user in sent:
        if sdk == "posthog":
            rows[message_id] = (user, kind)
        else:
            rows[str(uuid.uuid5(SEGMENT_NAMESPACE, message_id))] = (user, SEGMENT_TYPES.get(kind, kind))
    return rows


def wait_for_events(engine, expected: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """The stored events once every expected one is there (or the timeout passed)."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while True:
        found = {row["event_id"]: (row["user_id"], row["event_type"]) for row in stored(engine)}
        if expected.keys() <= found.keys() or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def fire(page, posthog_events: int, segment_events: int, label: str) -> None:
    page.evaluate(
        """([ph, seg, label]) => {
        for (let i = 0; i < ph; i++) posthog.capture(`${label} clicked`, {i});
        for (let i = 0; i < seg; i++) analytics.track(`${label} Clicked`, {i});
    }""",
        [posthog_events, segment_events, label],
    )


def test_both_sdks_deliver_1000_events_once_with_user_and_type(page, page_port, api, engine, key):
    answers: list[tuple[int, str]] = []
    page.on(
        "response",
        lambda response: response.url.startswith(api) and answers.append((response.status, response.url)),
    )
    url = page_url(page_port, api, posthog=key, segment=key)
    open_page(page, url, "posthog", "segment")
    page.evaluate(
        "() => { posthog.identify('user-7'); analytics.identify('user-7', {plan: 'pro'}); analytics.page(); }"
    )
    # posthog-js itself drops events past a burst of 100 (then 10/s) before they are logged or sent
    # (its client rate limit, on by default), so it gets 95 of the 1,000 events and analytics.js 905.
    fire(page, 85, 855, "early")
    # As over a page's life, the SDKs' queues leave on their own before the last events: posthog-js's
    # unload beacon has the browser's 64 KB limit, so hundreds of events queued at once would not fit.
    wait_for_events(
        engine,
        expected_rows(
            page.evaluate("() => { saveSent(); return JSON.parse(localStorage.getItem('sent')); }")
        ),
    )
    # Right before leaving. analytics.js hands an event to its transport a few promise turns after the
    # call, so like Segment's own trackLink it gets 300 ms; its batch then leaves by a keepalive fetch on
    # pagehide. posthog-js gets no delay at all: its queue leaves by sendBeacon on unload.
    fire(page, 0, 50, "late")
    page.wait_for_timeout(300)
    fire(page, 10, 0, "late")
    open_page(page, url, "posthog", "segment")  # the next page of the app
    sent = leave(page, page_port, api)

    expected = expected_rows(sent)
    found = wait_for_events(engine, expected)
    assert not [answer for answer in answers if answer[0] != 200]
    assert {event_id: found.get(event_id) for event_id in expected} == expected
    assert found.keys() == expected.keys()  # nothing stored that the page did not send, nothing twice

    kinds = Counter(kind for _, kind in expected.values())
    assert (kinds["early clicked"], kinds["early Clicked"]) == (85, 855)  # 1,000 events fired in all,
    assert (kinds["late clicked"], kinds["late Clicked"]) == (10, 50)  # all stored once
    assert kinds["$pageview"] == kinds["$pageleave"] == 2 and kinds["$identify"] >= 2 and kinds["$page"] == 1
    assert {user for user, kind in expected.values() if "Clicked" in kind or "clicked" in kind} == {"user-7"}

    rows = [row for row in stored(engine) if row["event_type"] == "$pageview"]
    assert {row["properties"]["$pathname"] for row in rows} == {"/page.html"}
    assert all(
        row["properties"]["$current_url"].startswith(f"http://127.0.0.1:{page_port}/page.html?")
        for row in rows
    )
    page_row = next(row for row in stored(engine) if row["event_type"] == "$page")
    assert page_row["properties"]["path"] == "/page.html" and page_row["properties"]["url"].startswith(
        "http://"
    )

    from eventsapp.security import keys

    reader = {"Authorization": "Bearer " + keys.create_key(engine, "analyst", ["read"])}
    today = datetime.now(timezone.utc).date()
    query = {"from": (today - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=1)).isoformat()}
    top = requests.get(
        f"{api}/stats/top-events", params={**query, "limit": 1000}, headers=reader, timeout=10
    ).json()
    assert {row["event_type"]: row["count"] for row in top} == dict(kinds)
    summary = requests.get(f"{api}/stats/summary", params=query, headers=reader, timeout=10).json()
    assert summary["events"] == len(expected)
    assert summary["users"] == len({user for user, _ in expected.values()})


def test_retried_requests_are_stored_once(page, page_port, api, engine, key):
    """Each SDK's first capture request is stored, but the SDK is told 503, so it sends it again."""
    failed: list[str] = []
    posted: list[str] = []
    page.on("request", lambda request: request.method == "POST" and posted.append(request.url.split("?")[0]))

    def store_then_fail(route):
        assert route.fetch().status == 200  # stored by the server ...
        failed.append(route.request.url)
        route.fulfill(
            status=503, headers={"Access-Control-Allow-Origin": "*", "Retry-After": "1"}, body='{"code": 503}'
        )  # ... but the SDK sees a failure

    def first_only(path: str):
        return lambda url: url.startswith(api + path) and not any(
            item.startswith(api + path) for item in failed
        )

    page.route(first_only("/e/"), store_then_fail)
    page.route(first_only("/v1/b"), store_then_fail)
    open_page(page, page_url(page_port, api, posthog=key, segment=key), "posthog", "segment")
    fire(page, 5, 5, "retried")
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while time.monotonic() < deadline and not all(posted.count(api + path) >= 2 for path in ("/e/", "/v1/b")):
        page.wait_for_timeout(200)
    assert len(failed) == 2 and posted.count(api + "/e/") >= 2 and posted.count(api + "/v1/b") >= 2

    expected = expected_rows(leave(page, page_port, api))
    found = wait_for_events(engine, expected)
    assert found == expected


def sdk_requests(sdk: str, status: int) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("eventsapp_sdk_requests_total", {"sdk": sdk, "status": str(status)}) or 0


def test_page_on_an_unlisted_origin_is_refused(page, page_port, api, engine, key):
    """http://localhost:PORT is another origin than the listed http://127.0.0.1:PORT."""
    before = sdk_requests("posthog", 403)
    settings: list[int] = []
    page.on("requestfailed", lambda request: "/settings" in request.url and settings.append(1))
    # analytics.js cannot read its settings (no CORS headers for this origin): it never becomes ready
    # and sends nothing. posthog-js's config is a <script> (no CORS), so it does post, and gets 403s.
    open_page(page, page_url(page_port, api, host="localhost", posthog=key, segment=key), "posthog")
    fire(page, 3, 3, "elsewhere")
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while time.monotonic() < deadline and sdk_requests("posthog", 403) == before:
        page.wait_for_timeout(200)
    assert sdk_requests("posthog", 403) > before
    assert settings and not page.evaluate("window.sdkReady.segment")
    open_page(page, f"http://localhost:{page_port}/page.html?api={api}")  # the last beacon: refused too
    assert stored(engine) == []
