"""Base weights: a backbone's registered weights (``deeptrain weights add``), one row per (architecture, name).

Revision ID: 0008_base_weights
Revises: 0007_user_keys
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_base_weights"
down_revision = "0007_user_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "base_weights",
        sa.Column("architecture", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("storage_key", sa.String(512), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("num_tensors", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("base_weights")
