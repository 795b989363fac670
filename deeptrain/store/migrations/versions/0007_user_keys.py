"""User keys: an API key with no app (``kind`` ``user``) acts in every app and can create apps.

Revision ID: 0007_user_keys
Revises: 0006_validation_split
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_user_keys"
down_revision = "0006_validation_split"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot drop NOT NULL in place (alembic copies the table there; PostgreSQL alters it)
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("kind", sa.String(8), nullable=False, server_default="app"))
        batch.alter_column("app_id", existing_type=sa.String(64), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM api_keys WHERE app_id IS NULL")
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("app_id", existing_type=sa.String(64), nullable=False)
        batch.drop_column("kind")
