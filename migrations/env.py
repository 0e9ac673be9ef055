"""Alembic environment for Flask-Migrate.

No ``fileConfig()`` here: it would disable the app's loggers. Migrations run under an advisory lock
so two processes starting on the same database never migrate at once.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from flask import current_app

MIGRATION_LOCK_ID = 0x6576_656E_7473  # "events"

config = context.config
target_metadata = current_app.extensions["migrate"].db.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=current_app.extensions["migrate"].db.engine.url.render_as_string(hide_password=False),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = current_app.extensions["migrate"].db.engine
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
