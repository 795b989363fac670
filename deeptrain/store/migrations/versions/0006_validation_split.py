"""Inputs' split column holds "validation" (10 characters): widened from 8 to 16.

Revision ID: 0006_validation_split
Revises: 0005_tune_runs
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_validation_split"
down_revision = "0005_tune_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite does not enforce VARCHAR lengths (and altering a column there rebuilds the table): nothing to do
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("inputs", "split", type_=sa.String(16), existing_type=sa.String(8), existing_nullable=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("inputs", "split", type_=sa.String(8), existing_type=sa.String(16), existing_nullable=True)
