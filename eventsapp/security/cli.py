"""``flask keys create|list|revoke``: thin wrappers around ``keys``."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from ..extensions import db
from . import auth, keys

keys_cli = AppGroup("keys", help="Manage API keys (only a hash of each key is stored).")


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
def create_command(name: str, scopes: tuple[str, ...]) -> None:
    """Create a key and print it once."""
    try:
        raw_key = keys.create_key(db.engine, name, list(scopes))
    except keys.KeyManagementError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(raw_key)
    click.echo(
        f"Key {name!r} created with scopes {', '.join(sorted(set(scopes)))}. "
        "It is shown only now; store it safely.",
        err=True,
    )


@keys_cli.command("list")
def list_command() -> None:
    """List keys (names, scopes, dates; never secrets)."""
    rows = keys.list_keys(db.engine)
    if not rows:
        click.echo("No API keys. Create one with: flask keys create --name NAME --scope ingest --scope read")
        return
    click.echo(f"{'NAME':<24} {'SCOPES':<20} {'CREATED':<25} STATUS")
    for row in rows:
        status = f"revoked {row.revoked_at:%Y-%m-%d %H:%M:%S%z}" if row.revoked_at else "active"
        click.echo(
            f"{row.name:<24} {','.join(row.scopes):<20} {row.created_at:%Y-%m-%d %H:%M:%S%z}     {status}"
        )


@keys_cli.command("revoke")
@click.argument("name")
def revoke_command(name: str) -> None:
    """Revoke a key; running servers refuse it within EVENTSAPP_KEY_CACHE_SECONDS."""
    if not keys.revoke_key(db.engine, name):
        raise click.ClickException(f"No active key named {name!r}.")
    auth.clear_cache()
    click.echo(f"Key {name!r} revoked.")
