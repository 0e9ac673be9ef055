#!/usr/bin/env python
"""Benchmark `flask rollups rebuild` (and `set-timezone`, the same work) on a fresh embedded database.

Events are generated in SQL (fast to load; the rebuild reads only occurred_at, user_id and event_type):
ROWS events over 90 days, USERS users with a few heavy and many light ones, 12 event types, and a small
properties object. Prints one table: per size, the whole rebuild and each of its steps.

    python bench/rebuild.py [--sizes 1500000] [--users 100000] [--repeat 2]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

FILL_SQL = """
INSERT INTO events (event_id, occurred_at, user_id, event_type, properties)
SELECT gen_random_uuid(),
       TIMESTAMPTZ '2025-08-01 00:00:00+00' + random() * INTERVAL '90 days',
       'user-' || floor(%(users)s * power(random(), 3))::int,
       'event_' || floor(12 * power(random(), 2))::int,
       jsonb_build_object('platform', (ARRAY['ios', 'android', 'web'])[1 + floor(random() * 3)::int])
FROM generate_series(1, %(rows)s)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1500000")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2, help="Rebuilds per size (the table shows each).")
    parser.add_argument("--tz", default="Europe/Berlin", help="Project timezone to rebuild for.")
    args = parser.parse_args()

    from eventsapp import create_app, embedded_pg
    from eventsapp.extensions import db
    from eventsapp.stats import rollups

    workdir = Path(tempfile.mkdtemp(prefix="eventsapp-bench-rebuild-"))
    workdir.chmod(0o755)
    app = create_app({"EVENTSAPP_DATA_DIR": workdir / "pgdata", "EVENTSAPP_LOG_LEVEL": "WARNING"})
    rows_out = []
    try:
        with app.app_context():
            engine = db.engine
            loaded = 0
            for size in (int(s) for s in args.sizes.split(",")):
                with engine.begin() as connection:
                    connection.exec_driver_sql("TRUNCATE rollup_outbox")  # the bench times rebuilds only
                    connection.exec_driver_sql(FILL_SQL, {"rows": size - loaded, "users": args.users})
                    connection.exec_driver_sql("TRUNCATE rollup_outbox")
                    connection.exec_driver_sql("ANALYZE events")
                loaded = size
                for run in range(args.repeat):
                    steps: dict[str, float] = {}
                    began = time.perf_counter()
                    with engine.begin() as connection:
                        rollups.rebuild_rollups(connection, args.tz, timings=steps)
                    total = time.perf_counter() - began
                    rows_out.append((size, run + 1, total, total / size * 1e6, steps))
    finally:
        with app.app_context():
            db.engine.dispose()
        embedded_pg.stop(workdir / "pgdata")
        shutil.rmtree(workdir, ignore_errors=True)

    names = list(rows_out[0][4]) if rows_out else []
    header = ["events", "run", "total s", "s per 1M"] + names
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for size, run, total, per_million, steps in rows_out:
        cells = [f"{size:,}", str(run), f"{total:.2f}", f"{per_million:.2f}"] + [f"{steps[n]:.2f}" for n in names]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
