#!/usr/bin/env python
"""Benchmark the SDK endpoints with the real SDKs: a fresh embedded database and waitress server; the
Segment and PostHog Python SDKs each send N events (their default batching, 100 per request), then the
same messages again (same messageId/uuid: all duplicates). Prints one table.
With --browser: single-event requests shaped as the browser SDKs send them (posthog-js gzip as
text/plain, posthog-js's base64 form beacon, analytics.js text/plain JSON), from --clients keep-alive
connections: requests/s and latency percentiles.

    python bench/sdk_ingest.py [--events 20000] [--gzip]
    python bench/sdk_ingest.py --browser [--requests 5000] [--clients 8]
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_http import BIN, REPO_ROOT, stored_count, wait_ready  # noqa: E402


def messages(total: int) -> list[tuple[str, str, str, datetime, dict]]:
    start = datetime.now(timezone.utc) - timedelta(days=20)
    types = ["app_open", "view_item", "message_sent", "add_to_cart", "login", "purchase", "logout"]
    return [(str(uuid.uuid4()), f"user-{(i * 7919) % 5000}", types[i % len(types)],
             start + timedelta(seconds=i * 7), {"plan": "pro" if i % 3 else "free", "i": i})
            for i in range(total)]


def send_segment(url: str, batch: list, use_gzip: bool) -> tuple[float, int]:
    from segment.analytics import Client

    failures: list = []
    client = Client("bench", host=url, gzip=use_gzip, max_queue_size=len(batch) + 1,
                    on_error=lambda error, msgs: failures.append(error))
    began = time.perf_counter()
    for message_id, user, event, when, properties in batch:
        client.track(user_id=user, event=event, properties=properties, timestamp=when, message_id=message_id)
    client.flush()
    elapsed = time.perf_counter() - began
    client.join()
    return elapsed, len(failures)


def send_posthog(url: str, batch: list, use_gzip: bool) -> tuple[float, int]:
    from posthog import Posthog

    failures: list = []
    client = Posthog("bench", host=url, gzip=use_gzip, max_queue_size=len(batch) + 1,
                     on_error=lambda error, msgs: failures.append(error))
    began = time.perf_counter()
    for event_uuid, user, event, when, properties in batch:
        client.capture(event, distinct_id=user, properties=properties, timestamp=when, uuid=event_uuid)
    client.flush()
    elapsed = time.perf_counter() - began
    client.shutdown()
    return elapsed, len(failures)


def browser_bodies(kind: str, total: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """(path, body, headers) of ``total`` single-event requests as the browser SDKs shape them."""
    import base64
    import gzip
    import json

    now = datetime.now(timezone.utc)
    out = []
    for i in range(total):
        when = (now - timedelta(seconds=i % 600)).isoformat()
        props = {"token": "bench", "distinct_id": f"user-{i % 500}", "$current_url": "https://app.example.com/p",
                 "$pathname": "/p", "$lib": "web", "$lib_version": "1.449.2", "i": i}
        if kind == "analytics.js text/plain":
            body = json.dumps({"type": "track", "event": "Clicked", "userId": f"user-{i % 500}",
                               "messageId": f"ajs-next-{i}-{uuid.uuid4()}", "timestamp": when, "sentAt": when,
                               "properties": {"i": i}, "context": {"page": {"path": "/p"}},
                               "integrations": {}, "writeKey": "bench"}).encode()
            out.append(("/v1/t", body, {"Content-Type": "text/plain"}))
            continue
        batch = json.dumps({"api_key": "bench", "sent_at": when, "batch": [
            {"uuid": str(uuid.uuid4()), "event": "clicked", "properties": props, "timestamp": when}]}).encode()
        if kind == "posthog-js gzip":
            out.append(("/e/", gzip.compress(batch), {"Content-Type": "text/plain"}))
        else:  # the unload beacon without compression: a form with the base64 JSON
            form = b"data=" + base64.b64encode(batch).replace(b"+", b"%2B").replace(b"/", b"%2F").replace(b"=", b"%3D")
            out.append(("/e/?compression=base64", form, {"Content-Type": "application/x-www-form-urlencoded"}))
    return out


def send_browser(port: int, requests_: list[tuple[str, bytes, dict[str, str]]], clients: int
                 ) -> tuple[float, list[float], int]:
    """Send each request once from ``clients`` keep-alive connections; (seconds, latencies, errors)."""
    import http.client
    import threading

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    shares = [requests_[i::clients] for i in range(clients)]

    def worker(share) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for path, body, headers in share:
            began = time.perf_counter()
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - began)
            if response.status != 200:
                with lock:
                    errors[0] += 1
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, sorted(latencies), errors[0]


def browser_main(args, url: str, data_dir: Path) -> bool:
    rows = []
    expected = 0
    for kind in ("posthog-js gzip", "posthog-js base64 form", "analytics.js text/plain"):
        bodies = browser_bodies(kind, args.requests)
        elapsed, latencies, errors = send_browser(args.port, bodies, args.clients)
        expected += args.requests
        pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
        rows.append((kind, args.requests / elapsed, pct(0.5), pct(0.95), stored_count(data_dir), expected, errors))
    print(f"\nBrowser-shaped SDK requests: {args.requests:,} single-event requests per kind, "
          f"{args.clients} keep-alive clients, waitress 8 threads, auth off")
    print(f"| {'request':<24} | {'requests/s':>10} | {'p50 ms':>6} | {'p95 ms':>6} | {'stored':>7} | {'expected':>8} | {'errors':>6} |")
    print(f"|{'-' * 26}|{'-' * 12}|{'-' * 8}|{'-' * 8}|{'-' * 9}|{'-' * 10}|{'-' * 8}|")
    for kind, rate, p50, p95, stored, want, errors in rows:
        print(f"| {kind:<24} | {rate:>10,.0f} | {p50:>6.1f} | {p95:>6.1f} | {stored:>7,} | {want:>8,} | {errors:>6} |")
    return all(stored == want and errors == 0 for *_, stored, want, errors in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--port", type=int, default=8798)
    parser.add_argument("--browser", action="store_true", help="browser-shaped single-event requests instead")
    parser.add_argument("--requests", type=int, default=5_000, help="--browser: requests per kind")
    parser.add_argument("--clients", type=int, default=8, help="--browser: concurrent keep-alive clients")
    args = parser.parse_args()
    logging.getLogger("segment").setLevel(logging.CRITICAL)
    logging.getLogger("posthog").setLevel(logging.CRITICAL)

    workdir = Path(tempfile.mkdtemp(prefix="eventsapp-bench-sdk-"))
    data_dir = workdir / "pgdata"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"EVENTSAPP_DATA_DIR": str(data_dir), "EVENTSAPP_AUTH": "off", "EVENTSAPP_LOG_LEVEL": "WARNING",
                "EVENTSAPP_RATE_LIMIT_INGEST": "1000000/minute"})
    if args.browser:
        # Unlimited in effect, as above, but over 1 s: the in-memory moving window keeps one entry per
        # request in its window and inserts at the front, so a minute's worth of small requests would
        # make the limiter itself (not the ingest) the cost measured.
        env["EVENTSAPP_RATE_LIMIT_INGEST"] = "1000000/second"
    server = subprocess.Popen(
        [str(BIN / "waitress-serve"), f"--listen=127.0.0.1:{args.port}", "--threads=8", "wsgi:app"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{args.port}"
    rows = []
    try:
        wait_ready(args.port)
        if args.browser:
            ok = browser_main(args, url, data_dir)
            sys.exit(0 if ok else 1)
        expected = 0
        for name, send in (("Segment", send_segment), ("PostHog", send_posthog)):
            batch = messages(args.events)
            for label in ("first send", "re-send (duplicates)"):
                elapsed, failures = send(url, batch, args.gzip)
                if label == "first send":
                    expected += args.events
                rows.append((f"{name} {label}", args.events / elapsed, elapsed, stored_count(data_dir),
                             expected, failures))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nSDK ingest with the real SDKs: {args.events:,} events each, SDK default batching (100 per request), "
          f"gzip {'on' if args.gzip else 'off'}, waitress 8 threads")
    print(f"| {'run':<30} | {'events/s':>9} | {'seconds':>7} | {'stored':>8} | {'expected':>8} | {'errors':>6} |")
    print(f"|{'-' * 32}|{'-' * 11}|{'-' * 9}|{'-' * 10}|{'-' * 10}|{'-' * 8}|")
    for label, rate, elapsed, stored, expected, errors in rows:
        print(f"| {label:<30} | {rate:>9,.0f} | {elapsed:>7.2f} | {stored:>8,} | {expected:>8,} | {errors:>6} |")
    ok = all(stored == expected and errors == 0 for *_, stored, expected, errors in rows)
    print("stored count equals distinct events sent:", "yes" if ok else "NO")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
