"""``flask import-csv SOURCE...``: a thin Click wrapper around ``service.import_sources``."""
from __future__ import annotations

import gc
import sys
import time
from contextlib import nullcontext
from typing import TextIO

import click

from . import service, sources as src

MAX_BATCH_SIZE = 100_000
MAX_REJECT_MESSAGES = 20


class ProgressBar:
    """Rows, rows/s and (when the size is known) a bar and ETA, redrawn on one terminal line."""

    interval = 0.2

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.perf_counter()
        self._last = 0.0
        self._drawn = False

    def update(self, rows: int, done_bytes: int, total_bytes: int | None) -> None:
        now = time.perf_counter()
        if now - self._last < self.interval:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        text = f"{rows:>12,} rows  {rows / elapsed:>9,.0f} rows/s"
        if total_bytes:
            fraction = min(done_bytes / total_bytes, 1.0)
            filled = int(fraction * 30)
            text = f"[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} {text}"
            if fraction > 0:
                text += f"  ETA {max(elapsed / fraction - elapsed, 0):5.1f} s"
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _summary(totals: service.ImportTotals) -> str:
    rate = totals.rows / totals.elapsed if totals.elapsed else 0.0
    names = ", ".join(totals.sources)
    count = len(totals.sources)
    return (f"{count} source{'s' if count != 1 else ''} ({names}): {totals.rows:,} rows read, "
            f"{totals.inserted:,} inserted, {totals.duplicates:,} duplicates, {totals.rejected:,} rejected "
            f"in {totals.elapsed:.2f} s ({rate:,.0f} rows/s)")


def get_engine_and_timezone():
    """The app's engine when the CLI has (or can make) the app; else one built without loading the app."""
    from flask import current_app, has_app_context
    from flask.cli import ScriptInfo

    if has_app_context():
        context = nullcontext()
    else:
        info = click.get_current_context().find_object(ScriptInfo)
        # The plain `flask` CLI runs this as a plugin command, without loading wsgi.py: stay lean. Only a
        # ScriptInfo with an app factory (the test runner, an embedding script) makes the app here; an app
        # the CLI loaded to run a command comes with its app context (FlaskGroup.get_command,
        # with_appcontext), the branch above.
        if info is None or info.create_app is None:
            from .. import config
            from .bootstrap import engine_without_app

            return engine_without_app(), config.from_env()["EVENTSAPP_TIMEZONE"]
        context = info.load_app().app_context()
    from ..extensions import db

    with context:
        return db.engine, current_app.config.get("EVENTSAPP_TIMEZONE")


@click.command("import-csv")
@click.argument("source", nargs=-1, required=True)
@click.option("-k", "--idempotency-key", "key", metavar="KEY",
              help="Import this content once: the same key again reports the first run's totals.")
@click.option("-b", "--batch-size", type=click.IntRange(1, MAX_BATCH_SIZE),
              default=service.DEFAULT_BATCH_SIZE, show_default=True, help="Rows per transaction.")
@click.option("--glob", "pattern", default="*.csv", show_default=True,
              help="Files to take from a directory SOURCE (sorted by name).")
@click.option("--skip-invalid", is_flag=True, help="Set bad rows aside and go on instead of stopping.")
@click.option("--rejects", "rejects_path", metavar="FILE", type=click.Path(dir_okay=False, writable=True),
              help="With --skip-invalid: write bad rows here (their columns + file, line, error).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def import_csv_command(source: tuple[str, ...], key: str | None, batch_size: int, pattern: str,
                       skip_invalid: bool, rejects_path: str | None, quiet: bool) -> None:
    """Import events from CSV files, directories, stdin (-) or http(s) URLs, gzipped or not.

    Columns: event_id,occurred_at,user_id,event_type,properties_json (any order). Rows are checked by
    the rules of POST /events and stored once per event_id; an interrupted import can simply be run again.
    Exit codes: 0 done (or already imported under KEY), 1 bad row or other failure, 2 KEY already used
    for different content.
    """
    if rejects_path and not skip_invalid:
        raise click.UsageError("--rejects needs --skip-invalid.")
    if key is not None and not 1 <= len(key) <= 255:
        raise click.UsageError("--idempotency-key must be 1..255 characters.")
    err = sys.stderr
    try:
        sources = src.expand(source, pattern)
    except src.SourceError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    bar = ProgressBar(err) if not quiet and err.isatty() else None
    shown = 0

    def on_reject(row_error: service.RowError) -> None:
        nonlocal shown
        if rejects_path is None:
            shown += 1
            if shown <= MAX_REJECT_MESSAGES:
                for message in row_error.messages():
                    click.echo(message, err=True)

    try:
        engine, project_tz = get_engine_and_timezone()
        # Everything loaded so far lives until exit: keep it out of the garbage collector's passes,
        # which at exit alone take 0.06-0.1 s of a command that may take 0.4 s in all.
        gc.freeze()
        result = service.import_sources(
            engine, sources, project_tz=project_tz, idempotency_key=key, batch_size=batch_size,
            skip_invalid=skip_invalid, rejects_path=rejects_path, on_progress=bar.update if bar else None,
            on_reject=on_reject,
        )
    except service.ImportFailed as exc:
        if bar:
            bar.close()
        for line in exc.details:
            click.echo(line, err=True)
        click.echo(f"Error: {exc}", err=True)
        if exc.totals is not None and not isinstance(exc, service.KeyConflict):
            click.echo(f"This run: {_summary(exc.totals)}", err=True)
        sys.exit(exc.exit_code)
    if bar:
        bar.close()
    totals = result.totals
    if result.replayed:
        click.echo(f"Already imported under key {key!r} on {result.imported_at}; nothing was written. "
                   f"That run: {_summary(totals)}")
        return
    if shown > MAX_REJECT_MESSAGES:
        click.echo(f"... and {shown - MAX_REJECT_MESSAGES:,} more rejected rows "
                   "(use --rejects FILE to keep them).", err=True)
    click.echo(f"Imported {_summary(totals)}")
    if totals.rejected and rejects_path:
        click.echo(f"{totals.rejected:,} rejected rows written to {rejects_path}")
