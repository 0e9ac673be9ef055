"""``flask keys create|list|revoke``: thin wrappers around ``keys``.

Also a ``flask.commands`` plugin (setup.cfg), so plain ``flask keys ...`` runs without building the
web app: it needs one table, not the API, docs, metrics and Alembic (about 2 s of start-up).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import click
import sqlalchemy as sa

from . import keys

keys_cli = click.Group("keys", help="Manage API keys (only a hash of each key is stored).")


@contextmanager
def _engine() -> Iterator[sa.Engine]:
    """The app's engine when the CLI has an app (tests, ``--app``); else one made without the web app.

    Database errors become a one-line message instead of a traceback.
    """
    from flask import has_app_context
    from flask.cli import ScriptInfo

    info = click.get_current_context().find_object(ScriptInfo)
    try:
        if has_app_context() or (info is not None and (info.create_app is not None or info.app_import_path)):
            from ..extensions import db

            with (nullcontext() if has_app_context() else info.load_app().app_context()):
                yield db.engine
        else:
            from ..importer.bootstrap import engine_without_app

            engine = engine_without_app()
            try:
                yield engine
            finally:
                engine.dispose()
    except sa.exc.ProgrammingError as exc:
        raise click.ClickException(
            f"The database schema is not ready ({type(exc.orig).__name__}): run `flask db upgrade`."
        ) from None
    except sa.exc.DBAPIError as exc:
        raise click.ClickException(f"Database unavailable: {type(exc.orig).__name__}: {exc.orig}") from None


@keys_cli.command("create")
@click.option("--name", "-n", required=True, help="Unique name, shown in logs and `keys list`.")
@click.option(
    "--scope",
    "-s",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(keys.SCOPES),
    help="Repeat for several: ingest (send events), read (stats), admin (everything).",
)
@click.option("--browser", is_flag=True,
              help="A key to embed in a web page (public): ingest only, browser endpoints only, "
              "rate-limited per IP.")
@click.option("--origin", "origins", multiple=True, metavar="URL",
              help="With --browser: a web origin allowed to use the key "
              "(repeat; e.g. https://app.example.com).")
def create_command(name: str, scopes: tuple[str, ...], browser: bool, origins: tuple[str, ...]) -> None:
    """Create a key and print it once."""
    try:
        with _engine() as engine:
            raw_key = keys.create_key(engine, name, list(scopes), browser=browser, origins=list(origins))
    except keys.KeyManagementError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(raw_key)
    kind = (f" (browser-safe, from {', '.join(origins) if origins else 'any origin'})" if browser else "")
    click.echo(
        f"Key {name!r} created with scopes {', '.join(sorted(set(scopes)))}{kind}. "
        "It is shown only now; store it safely.",
        err=True,
    )


@keys_cli.command("list")
def list_command() -> None:
    """List keys (names, scopes, dates; never secrets)."""
    with _engine() as engine:
        rows = keys.list_keys(engine)
    if not rows:
        click.echo("No API keys. Create one with: flask keys create --name NAME --scope ingest --scope read")
        return
    click.echo(f"{'NAME':<24} {'SCOPES':<20} {'CREATED':<25} STATUS")
    for row in rows:
        status = f"revoked {row.revoked_at:%Y-%m-%d %H:%M:%S%z}" if row.revoked_at else "active"
        if row.browser:
            status += f" browser ({' '.join(row.origins) or 'any origin'})"
        click.echo(
            f"{row.name:<24} {','.join(row.scopes):<20} {row.created_at:%Y-%m-%d %H:%M:%S%z}     {status}"
        )


@keys_cli.command("revoke")
@click.argument("name")
def revoke_command(name: str) -> None:
    """Revoke a key; running servers refuse it within EVENTSAPP_KEY_CACHE_SECONDS."""
    with _engine() as engine:
        revoked = keys.revoke_key(engine, name)
    if not revoked:
        raise click.ClickException(f"No active key named {name!r}.")
    from . import auth

    auth.clear_cache()  # this process's own lookups (a server process forgets within its cache window)
    click.echo(f"Key {name!r} revoked.")
