"""Models and model versions.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("app_id", sa.String(64), sa.ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("concepts", sa.JSON, nullable=True),
        sa.Column("default_version", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("model_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("dataset_version_id", sa.String(64), nullable=False),
        sa.Column("concepts", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=True),
        sa.Column("progress", sa.JSON, nullable=True),
        sa.Column("artifact_prefix", sa.String(512), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("job_id", sa.String(128), nullable=True),
        sa.Column("tune_run", sa.String(64), nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["app_id", "model_id"], ["models.app_id", "models.id"], ondelete="CASCADE",
                                name="fk_model_versions_model"),
    )


def downgrade() -> None:
    op.drop_table("model_versions")
    op.drop_table("models")
