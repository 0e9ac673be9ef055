"""browser-safe API keys: a flag and the web origins they may be used from

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-07

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    # Defaults keep every existing key what it was: not browser-safe, no origin list.
    op.add_column("api_keys", sa.Column("browser", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("api_keys", sa.Column("origins", postgresql.ARRAY(sa.Text()), server_default="{}",
                                        nullable=False))


def downgrade():
    op.drop_column("api_keys", "origins")
    op.drop_column("api_keys", "browser")
