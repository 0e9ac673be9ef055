#!/usr/bin/env python
"""Benchmark `flask rollups rebuild` (and `set-timezone`, the same work) on a fresh embedded database.

Events are generated in SQL (fast to load; the rebuild reads only occurred_at, user_id and event_type):
ROWS events over 90 days, USERS users with a few heavy and many light ones, 12 event types, and a small
properties object. Prints one table: per size, the current rebuild ("now", whole and per
step) interleaved with main's previous one ("before"), in seconds.

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


# main's rebuild before issue 18 #13, for comparison in the same run: the same aggregates, inserted into
# the emptied (DELETE) tables with their indexes in place.
BEFORE_SQL = (
    "DELETE FROM rollup_user_day", "DELETE FROM rollup_user_first", "DELETE FROM rollup_type_quarter",
    "DELETE FROM rollup_local_day_user", "DELETE FROM rollup_local_day_type", "DELETE FROM rollup_dau",
    """INSERT INTO rollup_user_day (day, user_id, first_at, last_at)
       SELECT (occurred_at AT TIME ZONE 'UTC')::date, user_id, min(occurred_at), max(occurred_at) FROM events GROUP BY 1, 2""",
    "INSERT INTO rollup_user_first (user_id, first_at) SELECT user_id, min(occurred_at) FROM events GROUP BY 1",
    """INSERT INTO rollup_type_quarter (bucket, event_type, events)
       SELECT date_bin('15 minutes', occurred_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), event_type, count(*)
       FROM events GROUP BY 1, 2""",
    """INSERT INTO rollup_local_day_type (day, event_type, events)
       SELECT (occurred_at AT TIME ZONE %(tz)s)::date, event_type, count(*) FROM events GROUP BY 1, 2""",
    """INSERT INTO rollup_local_day_user (day, user_id)
       SELECT DISTINCT (occurred_at AT TIME ZONE %(tz)s)::date, user_id FROM events""",
    "INSERT INTO rollup_dau (day, users) SELECT day, count(*) FROM rollup_local_day_user GROUP BY 1",
    "ANALYZE rollup_user_day, rollup_user_first, rollup_type_quarter, rollup_local_day_user, rollup_local_day_type, rollup_dau",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1500000")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2, help="Rebuilds per size (the table shows each).")
    parser.add_argument("--tz", default="Europe/Berlin", help="Project timezone to rebuild for.")
    parser.add_argument("--no-before", action="store_true", help="Skip the run of main's previous rebuild.")
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
                # Interleaved (now, before, now, before, ...): on a shared machine the load drifts, and a
                # rebuild pays for the checkpoints of the one before it.
                for run in range(args.repeat):
                    steps: dict[str, float] = {}
                    began = time.perf_counter()
                    with engine.begin() as connection:
                        rollups.rebuild_rollups(connection, args.tz, timings=steps)
                    total = time.perf_counter() - began
                    rows_out.append((size, f"now #{run + 1}", total, total / size * 1e6, steps))
                    if args.no_before:
                        continue
                    began = time.perf_counter()
                    with engine.begin() as connection:
                        for statement in BEFORE_SQL:
                            connection.exec_driver_sql(statement, {"tz": args.tz})
                    total = time.perf_counter() - began
                    rows_out.append((size, f"before #{run + 1}", total, total / size * 1e6, {}))
    finally:
        with app.app_context():
            db.engine.dispose()
        embedded_pg.stop(workdir / "pgdata")
        shutil.rmtree(workdir, ignore_errors=True)

    names = next((list(steps) for *_, steps in rows_out if steps), [])
    header = ["events", "rebuild", "total s", "s per 1M events"] + names
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for size, run, total, per_million, steps in rows_out:
        cells = [f"{size:,}", run, f"{total:.2f}", f"{per_million:.2f}"] + [f"{steps[n]:.2f}" if n in steps else "" for n in names]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
