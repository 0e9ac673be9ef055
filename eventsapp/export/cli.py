"""``flask export-events --from D --to D [--tz] [--segment S]... [--format csv|ndjson] -o FILE|-``."""
from __future__ import annotations

import gzip
import sys
import time
from datetime import date

import click
from flask import current_app
from flask.cli import with_appcontext


def _date(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD).", param_hint=name) from None


@click.command("export-events")
@click.option("--from", "from_", required=True, metavar="YYYY-MM-DD", help="First local date (inclusive).")
@click.option("--to", required=True, metavar="YYYY-MM-DD", help="Last local date (inclusive).")
@click.option("--tz", default=None, help="IANA timezone of the dates (default: EVENTSAPP_TIMEZONE).")
@click.option("--segment", multiple=True, help="event_type:NAME or properties.KEY=VALUE; repeatable, all hold.")
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), default="csv", show_default=True,
              help="csv is the `flask import-csv` format.")
@click.option("-o", "--output", required=True, metavar="FILE|-",
              help="Where to write; a name ending in .gz is gzip-compressed; - is stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@with_appcontext
def export_events_command(from_: str, to: str, tz: str | None, segment: tuple[str, ...], fmt: str,
                          output: str, quiet: bool) -> None:
    """Export every event of a date range in (occurred_at, event_id) order."""
    from marshmallow import ValidationError

    from ..extensions import db
    from ..importer.cli import ProgressBar
    from ..people.params import MAX_DATE, MIN_DATE, LocalRange, parse_segment, timezone_problem
    from . import service

    first, last = _date(from_, "--from"), _date(to, "--to")
    for value, name in ((first, "--from"), (last, "--to")):
        if not MIN_DATE <= value <= MAX_DATE:
            raise click.BadParameter(f"Must be between {MIN_DATE} and {MAX_DATE}.", param_hint=name)
    if first > last:
        raise click.BadParameter("Must not be before --from.", param_hint="--to")
    tz = tz or current_app.config["EVENTSAPP_TIMEZONE"]
    problem = timezone_problem(db.engine, tz)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="--tz")
    try:
        segments = [parse_segment(text) for text in segment]
    except ValidationError as exc:
        raise click.BadParameter(" ".join(exc.messages), param_hint="--segment") from None
    local = LocalRange(first, last, tz)

    bar = ProgressBar(sys.stderr) if not quiet and sys.stderr.isatty() else None
    done = 0

    total = None
    if bar and not segments:
        with db.engine.connect() as connection:
            total = service.estimate_events(connection, local)

    def on_rows(count: int) -> None:
        nonlocal done
        done += count
        if bar:
            bar.update(done, done, total)

    started = time.perf_counter()
    sink = sys.stdout.buffer if output == "-" else open(output, "wb")
    try:
        out = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=service.GZIP_LEVEL) \
            if output.endswith(".gz") else sink
        with db.engine.connect() as connection, connection.begin():
            rows = service.export_to(connection, out, local=local, segments=segments, fmt=fmt,
                                     on_rows=on_rows)
        if out is not sink:
            out.close()
    finally:
        if sink is not sys.stdout.buffer:
            sink.close()
        else:
            sink.flush()
        if bar:
            bar.close()
    elapsed = time.perf_counter() - started
    click.echo(f"Exported {rows:,} events ({fmt}) to {output} in {elapsed:.2f} s "
               f"({rows / elapsed if elapsed else 0:,.0f} events/s)", err=True)
