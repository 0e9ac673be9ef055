"""``flask rollups rebuild`` / ``fold`` / ``set-timezone``: thin wrappers around ``stats.rollups``."""
from __future__ import annotations

import time
import click
from flask import current_app
from flask.cli import AppGroup

from ..extensions import db
from . import rollups
from .calendar import timezone_problem

rollups_cli = AppGroup("rollups", help="Maintain the analytics rollups.")


@rollups_cli.command("rebuild")
def rebuild_command() -> None:
    """Recompute every rollup from the events table (for the database's project timezone)."""
    started = time.perf_counter()
    with db.engine.begin() as connection:
        configured = current_app.config["EVENTSAPP_TIMEZONE"]
        tz = rollups.project_timezone(rollups.rollup_timezone(connection), configured)
        events = rollups.rebuild_rollups(connection, tz)
    click.echo(f"rebuilt rollups ({tz}) from {events} events in {time.perf_counter() - started:.2f} s")


@rollups_cli.command("set-timezone")
@click.argument("tz")
def set_timezone_command(tz: str) -> None:
    """Make TZ the project timezone (stored in the database) and rebuild the rollups for it."""
    # The database decides which names are zones (stats/calendar.py), so rollups are never built for a
    # name that every stats read would then refuse (CET, localtime, or a zone only Python knows).
    if problem := timezone_problem(db.engine, tz):
        raise click.BadParameter(f"{problem} (an IANA name such as Europe/Berlin)", param_hint="TZ")
    started = time.perf_counter()
    with db.engine.begin() as connection:
        previous = rollups.rollup_timezone(connection)
        events = rollups.rebuild_rollups(connection, tz)
    click.echo(f"project timezone {previous or 'unset'} -> {tz}; rebuilt rollups from {events} events "
               f"in {time.perf_counter() - started:.2f} s")
    if tz != current_app.config["EVENTSAPP_TIMEZONE"]:
        click.echo(f"Set EVENTSAPP_TIMEZONE={tz} for every process, or each logs a warning (the database's "
                   "timezone is used either way); restart servers so their dashboard's default follows.")


@rollups_cli.command("fold")
def fold_command() -> None:
    """Fold queued events into the rollups now (reads do this anyway)."""
    started = time.perf_counter()
    with db.engine.begin() as connection:
        moved = rollups.fold_outbox(connection, current_app.config["EVENTSAPP_TIMEZONE"])
    click.echo(f"folded {moved} queued events in {time.perf_counter() - started:.2f} s")
