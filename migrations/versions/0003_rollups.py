"""analytics rollups folded from rollup_outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    # Segmented stats (event_type filter) read user_id from the index alone (index-only scan): measured
    # 450 -> 90 ms for first-seen per user over one event type at 1M events.
    op.drop_index("ix_events_event_type_occurred_at", table_name="events")
    op.create_index("ix_events_event_type_occurred_at", "events", ["event_type", "occurred_at"],
                    postgresql_include=["user_id"])
    # Which project timezone the local-day rollups were built for; a different one triggers a rebuild.
    op.create_table(
        "rollup_meta",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_tz", sa.Text(), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_rollup_meta_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_rollup_meta"),
    )
    op.create_table(
        "rollup_user_day",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "user_id", name="pk_rollup_user_day"),
    )
    op.create_table(
        "rollup_user_first",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_rollup_user_first"),
    )
    op.create_index("ix_rollup_user_first_first_at", "rollup_user_first", ["first_at"])
    op.create_table(
        "rollup_type_quarter",
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "event_type", name="pk_rollup_type_quarter"),
    )
    op.create_table(
        "rollup_local_day_user",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("day", "user_id", name="pk_rollup_local_day_user"),
    )
    op.create_index("ix_rollup_local_day_user_user_id_day", "rollup_local_day_user", ["user_id", "day"])
    op.create_table(
        "rollup_local_day_type",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "event_type", name="pk_rollup_local_day_type"),
    )
    op.create_table(
        "rollup_dau",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("users", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_rollup_dau"),
    )


def downgrade():
    op.drop_table("rollup_dau")
    op.drop_table("rollup_local_day_type")
    op.drop_index("ix_rollup_local_day_user_user_id_day", table_name="rollup_local_day_user")
    op.drop_table("rollup_local_day_user")
    op.drop_table("rollup_type_quarter")
    op.drop_index("ix_rollup_user_first_first_at", table_name="rollup_user_first")
    op.drop_table("rollup_user_first")
    op.drop_table("rollup_user_day")
    op.drop_table("rollup_meta")
    op.drop_index("ix_events_event_type_occurred_at", table_name="events")
    op.create_index("ix_events_event_type_occurred_at", "events", ["event_type", "occurred_at"])
