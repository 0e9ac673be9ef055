"""people: per-user index, deletion tombstones and the deletion audit

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    # A user's timeline newest first (keyset on occurred_at, event_id), their summary (event_type from the
    # index alone) and a deletion all start from the user_id.
    op.create_index("ix_events_user_id_occurred_at_event_id", "events", ["user_id", "occurred_at", "event_id"],
                    postgresql_include=["event_type"])
    # What a deletion keeps so that late retries of the deleted events stay deleted: a hash of the user_id
    # (never the id itself) and the time of the deletion.
    op.create_table(
        "user_tombstones",
        sa.Column("user_hash", sa.LargeBinary(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_hash", name="pk_user_tombstones"),
    )
    # The write path compares each batch with the latest deletion first (one index probe per batch).
    op.create_index("ix_user_tombstones_deleted_at", "user_tombstones", ["deleted_at"])
    # Proof that each request was carried out: who asked, when, how many events went. No deleted data.
    op.create_table(
        "deletion_audit",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("user_hash", sa.LargeBinary(), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events_deleted", sa.BigInteger(), nullable=False),
        sa.Column("found", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deletion_audit"),
    )


def downgrade():
    op.drop_table("deletion_audit")
    op.drop_index("ix_user_tombstones_deleted_at", table_name="user_tombstones")
    op.drop_table("user_tombstones")
    op.drop_index("ix_events_user_id_occurred_at_event_id", table_name="events")
