"""``flask users delete USER_ID... [--from-file F]``: deletion requests in bulk, with a summary."""
from __future__ import annotations

import getpass
import sys
import time

import click
from flask import current_app
from flask.cli import with_appcontext

# Users per transaction (one DELETE statement): a big request file neither holds writers off for long
# nor loses much progress if interrupted.
CHUNK = 500


@click.group("users")
def users_cli() -> None:
    """People: delete every event of users on request."""


@users_cli.command("delete")
@click.argument("user_ids", nargs=-1)
@click.option("--from-file", "from_file", type=click.File("r", encoding="utf-8"),
              help="A file of user_ids, one per line ('-' for stdin); blank lines are skipped.")
@click.option("--quiet", is_flag=True, help="Only the summary, not a line per user.")
@with_appcontext
def delete_command(user_ids: tuple[str, ...], from_file, quiet: bool) -> None:
    """Delete every event of each user, keep the analytics exact, audit each request.

    Users without events are reported as not found (and audited, with a tombstone, all the same).
    Exit code 0 when every request was carried out, whether the user was found or not.
    """
    from ..extensions import db
    from ..ingest.rules import USER_ID_MAX_CHARS
    from .service import read_user_ids, delete_users

    wanted = read_user_ids(list(user_ids) + (list(from_file) if from_file else []))
    if not wanted:
        raise click.UsageError("Give at least one USER_ID or --from-file.")
    too_long = [user for user in wanted if len(user) > USER_ID_MAX_CHARS]
    if too_long:
        raise click.UsageError(f"user_id longer than {USER_ID_MAX_CHARS} characters: {too_long[0][:40]}...")
    requested_by = f"cli:{_os_user()}"
    project_tz = current_app.config["EVENTSAPP_TIMEZONE"]
    started = time.perf_counter()
    deleted = events = 0
    missing: list[str] = []
    for start in range(0, len(wanted), CHUNK):
        with db.engine.begin() as connection:
            results = delete_users(connection, wanted[start:start + CHUNK], requested_by=requested_by,
                                   project_tz=project_tz)
        for result in results:
            if result.found:
                deleted += 1
                events += result.events_deleted
            else:
                missing.append(result.user_id)
            if not quiet:
                click.echo(f"{'deleted' if result.found else 'not found'}\t{result.events_deleted}\t{result.user_id}")
    click.echo(f"{len(wanted)} users requested: {deleted} deleted ({events} events), {len(missing)} not found"
               + (f": {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}" if missing else "")
               + f" in {time.perf_counter() - started:.2f} s")
    sys.stdout.flush()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
