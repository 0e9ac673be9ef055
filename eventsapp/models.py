"""Table definitions (SQLAlchemy Core). Migrations in ``migrations/`` create them."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("properties", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ix_events_occurred_at", "occurred_at"),
    sa.Index("ix_events_event_type_occurred_at", "event_type", "occurred_at", postgresql_include=["user_id"]),
    sa.Index("ix_events_user_id_occurred_at_event_id", "user_id", "occurred_at", "event_id",
             postgresql_include=["event_type"]),  # migration 0004 (people)
)

# Rows inserted into ``events`` by the write function, waiting to be folded into the analytics
# rollups. Written in the same transaction as the events, so no committed event is ever missed.
rollup_outbox = sa.Table(
    "rollup_outbox",
    metadata,
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
)

# Analytics rollups (eventsapp/stats/rollups.py folds the outbox into them; migration 0003).
# Project-timezone ("local") tables follow rollup_meta.project_tz; the others are timezone-free.
rollup_meta = sa.Table(
    "rollup_meta",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("project_tz", sa.Text, nullable=False),
    sa.Column("built_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("id = 1", name="ck_rollup_meta_single_row"),
)
rollup_user_day = sa.Table(  # per user and UTC day: first and last event time
    "rollup_user_day",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
)
rollup_user_first = sa.Table(
    "rollup_user_first",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_rollup_user_first_first_at", "first_at"),
)
rollup_type_quarter = sa.Table(  # events per 15-minute UTC bucket and event type
    "rollup_type_quarter",
    metadata,
    sa.Column("bucket", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("event_type", sa.Text, primary_key=True),
    sa.Column("events", sa.BigInteger, nullable=False),
)
rollup_local_day_user = sa.Table(
    "rollup_local_day_user",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Index("ix_rollup_local_day_user_user_id_day", "user_id", "day"),
)
rollup_local_day_type = sa.Table(
    "rollup_local_day_type",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("event_type", sa.Text, primary_key=True),
    sa.Column("events", sa.BigInteger, nullable=False),
)
rollup_dau = sa.Table(
    "rollup_dau",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("users", sa.BigInteger, nullable=False),
)
# Users whose first event (project timezone) is on first_day and who were active on day: daily first-seen
# retention without reading the members' days.
rollup_cohort_day = sa.Table(
    "rollup_cohort_day",
    metadata,
    sa.Column("first_day", sa.Date, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("users", sa.BigInteger, nullable=False),
)

# Idempotency keys of HTTP requests (kind 'http', they expire) and CSV imports (kind 'import').
processed_keys = sa.Table(
    "processed_keys",
    metadata,
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("result", pg.JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
)

# API keys (hardening issue): only a hash of the secret is stored.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),
    sa.Column("scopes", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    # Browser-safe keys (migration 0005): ingest only, from the listed web origins (empty: any).
    sa.Column("browser", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("origins", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
)

# People and data rights (migration 0004): what a deletion keeps so that late retries stay deleted (a
# SHA-256 of the user_id and the deletion time), and the audit of deletion requests (never deleted data).
user_tombstones = sa.Table(
    "user_tombstones",
    metadata,
    sa.Column("user_hash", sa.LargeBinary, primary_key=True),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_user_tombstones_deleted_at", "deleted_at"),
)
deletion_audit = sa.Table(
    "deletion_audit",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("user_hash", sa.LargeBinary, nullable=False),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("events_deleted", sa.BigInteger, nullable=False),
    sa.Column("found", sa.Boolean, nullable=False),
)
