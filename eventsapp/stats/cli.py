"""``flask rollups rebuild`` / ``flask rollups fold``: thin wrappers around ``stats.rollups``."""
from __future__ import annotations

import time

import click
from flask import current_app
from flask.cli import AppGroup

from ..extensions import db
from . import rollups

rollups_cli = AppGroup("rollups", help="Maintain the analytics rollups.")


@rollups_cli.command("rebuild")
@click.option("--tz", default=None, help="Project timezone to build for (default: EVENTSAPP_TIMEZONE).")
def rebuild_command(tz: str | None) -> None:
    """Recompute every rollup from the events table."""
    started = time.perf_counter()
    with db.engine.begin() as connection:
        events = rollups.rebuild_rollups(connection, tz or current_app.config["EVENTSAPP_TIMEZONE"])
    click.echo(f"rebuilt rollups from {events} events in {time.perf_counter() - started:.2f} s")


@rollups_cli.command("fold")
def fold_command() -> None:
    """Fold queued events into the rollups now (reads do this anyway)."""
    started = time.perf_counter()
    with db.engine.begin() as connection:
        moved = rollups.fold_outbox(connection, current_app.config["EVENTSAPP_TIMEZONE"])
    click.echo(f"folded {moved} queued events in {time.perf_counter() - started:.2f} s")
