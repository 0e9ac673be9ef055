#!/usr/bin/env python
"""Benchmark the SDK endpoints with the real SDKs: a fresh embedded database and waitress server; the
Segment and PostHog Python SDKs each send N events (their default batching, 100 per request), then the
same messages again (same messageId/uuid: all duplicates). Prints one table.

    python bench/sdk_ingest.py [--events 20000] [--gzip]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--port", type=int, default=8798)
    args = parser.parse_args()
    logging.getLogger("segment").setLevel(logging.CRITICAL)
    logging.getLogger("posthog").setLevel(logging.CRITICAL)

    workdir = Path(tempfile.mkdtemp(prefix="eventsapp-bench-sdk-"))
    data_dir = workdir / "pgdata"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"EVENTSAPP_DATA_DIR": str(data_dir), "EVENTSAPP_AUTH": "off", "EVENTSAPP_LOG_LEVEL": "WARNING",
                "EVENTSAPP_RATE_LIMIT_INGEST": "1000000/minute"})
    server = subprocess.Popen(
        [str(BIN / "waitress-serve"), f"--listen=127.0.0.1:{args.port}", "--threads=8", "wsgi:app"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{args.port}"
    rows = []
    try:
        wait_ready(args.port)
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
