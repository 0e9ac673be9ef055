#!/usr/bin/env python
"""Benchmark /stats/funnel and retention with start/return events over HTTP (waitress) at 1M events with 100k users (issue 14's shape). One table.

The events come from data/generate_events.py (30 days from 2025-08-01, ``--users`` = rows / 10), loaded
with `flask import-csv`, then `VACUUM ANALYZE events` (what autovacuum does shortly after a bulk load; it
lets event_type steps read the (event_type, occurred_at) index alone). CALLS timed GETs per question after
2 warm-ups, one keep-alive connection. ``--data-dir`` keeps the loaded database for the next run.

    python bench/funnels.py [--rows 1000000] [--calls 10] [--data-dir /tmp/funnels-1m]
    python bench/funnels.py --rows 10000000 --days 90 --calls 5 --data-dir /tmp/q10m/pgdata-10000000-1000000-days90

Before/after on one machine: ``--only 1,2,6`` times only those questions (1-based), and ``--serve-from
/work/main`` serves another checkout's code (its own .venv) against the same data; alternate the two runs
to see past the load of a shared machine.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from ingest_http import BIN, REPO_ROOT, wait_ready  # noqa: E402  (this folder is sys.path[0])
from queries import csv_for, server_env, time_calls  # noqa: E402

STEPS3 = "step=event_type:app_open&step=event_type:add_to_cart&step=event_type:purchase"
QUESTIONS = (
    # (name, path, goal ms or None)
    ("funnel 3 steps, 30 days, 1-day window", f"/stats/funnel?from=2025-08-01&to=2025-08-30&{STEPS3}", 300),
    ("  + breakdown properties.platform",
     f"/stats/funnel?from=2025-08-01&to=2025-08-30&{STEPS3}&breakdown=properties.platform", 500),
    ("  order=any", f"/stats/funnel?from=2025-08-01&to=2025-08-30&{STEPS3}&order=any", None),
    ("  order=strict", f"/stats/funnel?from=2025-08-01&to=2025-08-30&{STEPS3}&order=strict", None),
    ("  exclude logout@1-2", f"/stats/funnel?from=2025-08-01&to=2025-08-30&{STEPS3}&exclude=event_type:logout@1-2",
     None),
    ("funnel 3 steps, 7 days, 1-hour window",
     f"/stats/funnel?from=2025-08-08&to=2025-08-14&{STEPS3}&window=3600", None),
    ("retention login -> purchase, 7 daily",
     "/stats/retention?start_date=2025-08-08&windows=7&start=event_type:login&return=event_type:purchase", 200),
    ("  + mode=on_or_after, cohort=active",
     "/stats/retention?start_date=2025-08-08&windows=7&start=event_type:login&return=event_type:purchase"
     "&mode=on_or_after&cohort=active", None),
)


def load(rows: int, users: int, days: int, data_dir: Path, env: dict[str, str], cache: Path) -> float | None:
    """Generate and import the events unless ``data_dir`` already holds them; seconds spent, or None."""
    if (data_dir / "PG_VERSION").exists():
        return None
    csv_path = csv_for(rows, cache, users, days)
    began = time.perf_counter()
    subprocess.run([str(BIN / "flask"), "import-csv", str(csv_path), "--quiet"], cwd=REPO_ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def vacuum(data_dir: Path) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from eventsapp import embedded_pg

    engine = sa.create_engine(embedded_pg.start(data_dir), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql("VACUUM ANALYZE events")
    engine.dispose()
    embedded_pg.stop(data_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--days", type=int, default=30, help="Days of generated data (issue 17's 10M shape: 90).")
    parser.add_argument("--project-tz", default="UTC")
    parser.add_argument("--port", type=int, default=8814)
    parser.add_argument("--data-dir", default=None, help="Keep the loaded database here (reused if present).")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "eventsapp-bench-data"))
    parser.add_argument("--only", default=None, help="Comma-separated question numbers (1-based) to time.")
    parser.add_argument("--serve-from", default=str(REPO_ROOT),
                        help="Checkout whose code (and .venv) serves the questions; default this one.")
    args = parser.parse_args()
    serve_from = Path(args.serve_from).resolve()
    chosen = [QUESTIONS[int(i) - 1] for i in args.only.split(",")] if args.only else list(QUESTIONS)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    workdir = None if args.data_dir else Path(tempfile.mkdtemp(prefix="eventsapp-bench-funnels-"))
    data_dir = Path(args.data_dir) if args.data_dir else workdir / "pgdata"
    env = server_env(data_dir, args.project_tz)
    server = None
    try:
        import_s = load(args.rows, args.rows // 10, args.days, data_dir, env, cache)
        vacuum(data_dir)
        serve_bin = serve_from / ".venv" / "bin" if serve_from != REPO_ROOT else BIN
        server = subprocess.Popen(
            [str(serve_bin / "waitress-serve"), f"--listen=127.0.0.1:{args.port}", "--threads=4", "wsgi:app"],
            cwd=serve_from, env={**env, "PYTHONPATH": str(serve_from), "PYTHONDONTWRITEBYTECODE": "1"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_ready(args.port, timeout=120)
        results = []
        for name, path, goal in chosen:
            try:
                results.append((name, *time_calls(args.port, path, args.calls), goal))
            except SystemExit as failure:  # a 503 (query timeout) is a result too
                results.append((name, float("nan"), float("nan"), goal))
                print(f"{name}: {failure}", file=sys.stderr)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    loaded = f"import-csv {import_s:.1f} s" if import_s is not None else f"reused {data_dir}"
    print(f"\n/stats/funnel over HTTP (waitress, 4 threads), {args.rows:,} events, {args.rows // 10:,} users, "
          f"{args.days} days, project tz {args.project_tz}; {args.calls} calls each after 2 warm-ups; {loaded};"
          f" code {serve_from}")
    print(f"| {'question':<40} | {'p50 ms':>8} | {'p95 ms':>8} | {'goal ms':>7} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 10}|{'-' * 9}|")
    for name, p50, p95, goal in results:
        print(f"| {name:<40} | {p50:>8.1f} | {p95:>8.1f} | {goal or '':>7} |")


if __name__ == "__main__":
    main()
