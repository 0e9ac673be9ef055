#!/usr/bin/env python3
"""Benchmark ``flask import-csv`` against PostgreSQL's own COPY of the same file, in the same run.

    python bench/import.py                      # 100k (3 runs) and 1M rows (1 run), embedded PostgreSQL
    python bench/import.py --rows 100000 --runs 5
    python bench/import.py --rows 2000000 --users 100000 --skip-reruns   # 100k users per 1M rows
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python bench/import.py   # another server

Every figure is the wall time of what a user waits for: the whole ``flask import-csv`` process
(start-up, embedded-server join, parsing, validation, writes, rollup fold), on a fresh database each
run (all app tables truncated). Alongside, on the same server: ``COPY ... FROM STDIN (FORMAT csv,
HEADER)`` of the same file into (a) an unindexed five-column table and (b) the reference schema (uuid
primary key, btree (occurred_at), (event_type, occurred_at), (user_id, occurred_at), GIN (properties
jsonb_path_ops)), timed from the client; the reference COPYs read the file without its ~1% repeated
event_ids, which a primary key would refuse. Also: the same key again, the same file under a new key (all
duplicates), and the import's peak RSS. Medians of ``--runs``. The machine may be shared: run it when
it is quiet and read the spread.

A second table shows the import's rate over each million rows (each tenth below 2M rows), read from its
progress bar (the command runs on a pseudo-terminal), so a slowdown as the tables grow is visible; the
last part runs to the process's exit (the last batches and the final rollup fold). The reference schema's
COPY (its GIN index takes ~100 s per million rows) runs only below 1M rows unless ``--reference``.
"""
from __future__ import annotations

import argparse
import csv
import os
import pty
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from queries import csv_for  # noqa: E402  (this folder is sys.path[0])


def events_file(rows: int, users_per_million: int | None, cache: Path, days: int = 30) -> Path:
    """The generated file of ``rows`` rows over ``days`` days; ``users_per_million``: distinct users per 1M
    rows (the generator's default is 40k per 1M)."""
    users = None if users_per_million is None else max(users_per_million * rows // 1_000_000, 50)
    return csv_for(rows, cache, users, days)

REFERENCE_SCHEMA = """
DROP TABLE IF EXISTS bench_ref_plain, bench_ref_indexed;
CREATE TABLE bench_ref_plain (event_id text, occurred_at text, user_id text, event_type text,
                              properties text);
CREATE TABLE bench_ref_indexed (event_id uuid PRIMARY KEY, occurred_at timestamptz, user_id text,
                                event_type text, properties jsonb);
CREATE INDEX ON bench_ref_indexed (occurred_at);
CREATE INDEX ON bench_ref_indexed (event_type, occurred_at);
CREATE INDEX ON bench_ref_indexed (user_id, occurred_at);
CREATE INDEX ON bench_ref_indexed USING gin (properties jsonb_path_ops);
"""
COPY = "COPY {table} (event_id, occurred_at, user_id, event_type, properties) FROM STDIN (FORMAT csv, HEADER)"


def without_repeats(path: Path) -> Path:
    """The file without its repeated event_ids (first kept): COPY into a primary key refuses repeats."""
    out_path = path.with_suffix(".unique.csv")
    if not out_path.exists():
        seen: set[str] = set()
        with path.open("r", encoding="utf-8", newline="") as source, \
                out_path.open("w", encoding="utf-8", newline="") as out:
            reader = csv.reader(source)
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(next(reader))
            for row in reader:
                if row[0] not in seen:
                    seen.add(row[0])
                    writer.writerow(row)
    return out_path


_PROGRESS_ROWS = re.compile(rb"([0-9][0-9,]*) rows ")


def run_import_measured(env: dict[str, str], *args: str,
                        progress: list[tuple[float, int]] | None = None) -> tuple[float, float, str, float]:
    """Wall seconds, peak RSS (MB), stdout and CPU seconds of one ``flask import-csv`` process (via wait4).

    With ``progress``: stderr is a pseudo-terminal, so the command draws its progress bar; every redraw is
    appended as (seconds since start, rows read)."""
    started = time.perf_counter()
    out_file = tempfile.TemporaryFile()
    err_file = tempfile.TemporaryFile()
    quiet = () if progress is not None else ("--quiet",)
    master = slave = None
    if progress is not None:
        master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "flask", "import-csv", *args, *quiet], cwd=REPO,
                               env=env, stdout=out_file, stderr=slave if slave is not None else err_file)
    if master is not None:
        os.close(slave)
        pending = b""
        while True:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the process closed its terminal
                break
            if not chunk:
                break
            now = time.perf_counter() - started
            pending += chunk
            *draws, pending = pending.split(b"\r")
            for draw in draws:
                if match := _PROGRESS_ROWS.search(draw):
                    progress.append((now, int(match.group(1).replace(b",", b""))))
                elif draw.strip(b"\x1b[K\r\n "):
                    err_file.write(draw)
        err_file.write(pending)
        os.close(master)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    out_file.seek(0)
    err_file.seek(0)
    if process.returncode != 0:
        raise SystemExit(f"import failed ({process.returncode}):\n{err_file.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024, out_file.read().decode().strip(), usage.ru_utime + usage.ru_stime


def part_rates(progress: list[tuple[float, int]], rows: int, elapsed: float) -> list[tuple[int, float]]:
    """Rows/s over each million rows (each tenth below 2M): (rows at the part's end, rate). The time a part
    ends is interpolated between progress redraws; the last part ends when the process exits."""
    part = 1_000_000 if rows >= 2_000_000 else max(rows // 10, 1)
    ends = list(range(part, rows, part))
    points = [(0.0, 0)] + progress
    times = []
    for end in ends:
        for (t0, r0), (t1, r1) in zip(points, points[1:]):
            if r0 < end <= r1:
                times.append(t0 + (t1 - t0) * (end - r0) / (r1 - r0))
                break
        else:
            return []  # too few redraws to tell
    times.append(elapsed)
    bounds = [0] + ends + [rows]
    starts = [0.0] + times[:-1]
    return [(bounds[i + 1], (bounds[i + 1] - bounds[i]) / (times[i] - starts[i]))
            for i in range(len(times))]


class ServerCpu:
    """CPU seconds used by the embedded PostgreSQL (postmaster, its workers and every exited backend).

    Wall times on a shared machine move with other people's load; CPU seconds move much less, so the
    table also compares work done: import process + database vs COPY's database work.
    """

    def __init__(self, data_dir: Path | None) -> None:
        self.process = None
        if data_dir is not None:
            import psutil

            pid = int((data_dir / "postmaster.pid").read_text().split()[0])
            self.process = psutil.Process(pid)

    def total(self) -> float:
        if self.process is None:
            return float("nan")
        time.sleep(0.3)  # let the postmaster reap backends that just exited
        times = self.process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self.process.children():
            try:
                child_times = child.cpu_times()
            except Exception:  # noqa: BLE001 - gone meanwhile: already counted in children_*
                continue
            total += child_times.user + child_times.system
        return total


def copy_reference(engine, path: Path, cpu: "ServerCpu",
                   reference: bool = True) -> tuple[float, float, float]:
    with engine.begin() as connection:
        connection.exec_driver_sql(REFERENCE_SCHEMA)
    timings = []
    cpu_used = 0.0
    for table in ("bench_ref_plain", "bench_ref_indexed") if reference else ("bench_ref_plain",):
        engine.dispose()
        before = cpu.total()
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cursor, path.open("rb") as handle:
                started = time.perf_counter()
                cursor.copy_expert(COPY.format(table=table), handle)
                raw.commit()
                timings.append(time.perf_counter() - started)
        finally:
            raw.close()
        engine.dispose()
        cpu_used = cpu.total() - before
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE bench_ref_plain, bench_ref_indexed")
    return timings[0], timings[1] if reference else float("nan"), cpu_used


def fresh(engine) -> None:
    from eventsapp.models import metadata

    names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"TRUNCATE {names}")
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark flask import-csv against COPY.")
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated file sizes")
    parser.add_argument("--runs", type=int, default=3, help="runs per size below 1M rows")
    parser.add_argument("--runs-1m", type=int, default=1, help="runs for sizes of 1M rows and more")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "eventsapp-import-bench"),
                        help="folder for generated files (kept between runs)")
    parser.add_argument("--users", type=int, default=None, metavar="PER_MILLION",
                        help="distinct users per 1M rows (default: the generator's 40k per 1M)")
    parser.add_argument("--reference", action="store_true",
                        help="also COPY into the reference schema (GIN) at 1M rows and more")
    parser.add_argument("--days", type=int, default=30,
                        help="days of generated data (issue 17's 10M shape: 90)")
    parser.add_argument("--skip-reruns", action="store_true",
                        help="skip the same-key and all-duplicates runs")
    args = parser.parse_args()
    sizes = [int(size) for size in args.rows.split(",")]
    files = Path(args.data)
    files.mkdir(parents=True, exist_ok=True)
    paths = {rows: events_file(rows, args.users, files, args.days) for rows in sizes}
    unique = {rows: without_repeats(path) for rows, path in paths.items()}

    env = dict(os.environ, PYTHONUNBUFFERED="1", EVENTSAPP_LOG_LEVEL="WARNING")
    owned_folder = None
    if not os.environ.get("DATABASE_URL"):
        # A fresh embedded server, held open by this process so each import joins it warm, as it
        # would join a running app's server.
        owned_folder = Path(tempfile.mkdtemp(prefix="eventsapp-import-bench-pg-"))
        owned_folder.chmod(0o755)
        env["EVENTSAPP_DATA_DIR"] = str(owned_folder / "pgdata")
        os.environ["EVENTSAPP_DATA_DIR"] = env["EVENTSAPP_DATA_DIR"]
    os.environ["EVENTSAPP_LOG_LEVEL"] = "WARNING"
    from eventsapp import create_app
    from eventsapp.extensions import db

    app = create_app()
    if os.environ.get("DATABASE_URL"):
        from flask_migrate import upgrade

        from eventsapp.database import MIGRATIONS_DIR

        with app.app_context():
            upgrade(directory=str(MIGRATIONS_DIR))
    with app.app_context():
        engine = db.engine
    cpu = ServerCpu(Path(env["EVENTSAPP_DATA_DIR"]) if owned_folder is not None else None)
    results = []
    parts: dict[int, list[tuple[int, float]]] = {}
    try:
        for rows in sizes:
            path = paths[rows]
            runs = args.runs_1m if rows >= 1_000_000 else args.runs
            imports, plains, indexeds, rss, replays, dups = [], [], [], [], [], []
            cpu_imports, cpu_refs = [], []
            for run in range(runs):
                fresh(engine)
                plain, indexed, cpu_ref = copy_reference(engine, unique[rows], cpu,
                                                         reference=args.reference or rows < 1_000_000)
                fresh(engine)
                engine.dispose()
                before = cpu.total()
                key = f"bench-{run}"
                progress: list[tuple[float, int]] = []
                elapsed, peak, summary, cpu_process = run_import_measured(env, str(path), "-k", key,
                                                                          progress=progress)
                cpu_import = cpu_process + cpu.total() - before
                parts.setdefault(rows, part_rates(progress, rows, elapsed))
                replay = dup = float("nan")
                if not args.skip_reruns:
                    replay, _, replay_out, _ = run_import_measured(env, str(path), "-k", key)
                    assert "Already imported" in replay_out, replay_out
                    dup, _, dup_out, _ = run_import_measured(env, str(path), "-k", f"bench-new-{run}")
                    assert " 0 inserted" in dup_out, dup_out
                imports.append(elapsed)
                plains.append(plain)
                indexeds.append(indexed)
                rss.append(peak)
                replays.append(replay)
                dups.append(dup)
                cpu_imports.append(cpu_import)
                cpu_refs.append(cpu_ref)
                print(f"  {rows:>9,} run {run + 1}: import {elapsed:.2f} s (COPY plain {plain:.2f} s, "
                      f"reference {indexed:.2f} s), same key {replay:.2f} s, all duplicates {dup:.2f} s, "
                      f"peak RSS {peak:.0f} MB, CPU import {cpu_import:.2f} s (process {cpu_process:.2f} s) "
                      f"vs reference COPY {cpu_ref:.2f} s, "
                      f"load {os.getloadavg()[0]:.1f} | {summary}", file=sys.stderr)
            results.append((rows, runs, statistics.median(imports), statistics.median(plains),
                            statistics.median(indexeds), statistics.median(replays), statistics.median(dups),
                            max(rss), statistics.median(cpu_imports), statistics.median(cpu_refs)))
    finally:
        from eventsapp import embedded_pg

        engine.dispose()
        if owned_folder is not None:
            embedded_pg.stop(Path(env["EVENTSAPP_DATA_DIR"]))
            shutil.rmtree(owned_folder, ignore_errors=True)

    print()
    print(f"flask import-csv vs COPY, medians ({os.cpu_count()} CPUs, "
          f"load avg {os.getloadavg()[0]:.1f} at the end)")
    print("| rows | runs | import-csv (s) | COPY unindexed (s) | COPY reference schema (s) "
          "| import / reference | same key again (s) | all duplicates, new key (s) | dup s per 100k "
          "| peak RSS (MB) "
          "| CPU s: import (process + db) | CPU s: reference COPY (db) | CPU ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rows, runs, imp, plain, indexed, replay, dup, peak, cpu_imp, cpu_ref in results:
        print(f"| {rows:,} | {runs} | {imp:.2f} | {plain:.2f} | {indexed:.2f} | {imp / indexed:.2f}x "
              f"| {replay:.2f} | {dup:.2f} | {dup / rows * 100_000:.2f} | {peak:.0f} | {cpu_imp:.2f} "
              f"| {cpu_ref:.2f} "
              f"| {cpu_imp / cpu_ref:.2f}x |")
    print("\nGoals: import <= 1.0x reference (ceiling 1.5x); same key <= 0.5 s; "
          "all duplicates <= 1.0 s per 100k; peak RSS <= 200 MB at 1M rows.")
    print()
    users = f"{args.users:,} users per 1M rows" if args.users else "the generator's default users"
    print(f"Import rate as the tables grow (first run of each size; {users})")
    print("| rows | import rows/s overall | import / COPY unindexed | part (rows up to) | part rows/s "
          "| part vs first |")
    print("|---:|---:|---:|---:|---:|---:|")
    for rows, runs, imp, plain, *_ in results:
        rates = parts.get(rows) or []
        for index, (end, rate) in enumerate(rates):
            lead = f"| {rows:,} | {rows / imp:,.0f} | {imp / plain:.1f}x" if index == 0 else "| | |"
            print(f"{lead} | {end:,} | {rate:,.0f} | {rate / rates[0][1]:.0%} |")
        if not rates:
            print(f"| {rows:,} | {rows / imp:,.0f} | {imp / plain:.1f}x | (no progress read) | | |")
    print("\nGoals at 10M: >= 40,000 rows/s overall; the last million >= 70% of the first; <= 6x COPY "
          "unindexed; peak RSS <= 200 MB.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
