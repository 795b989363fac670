"""Tuning runs and their trials.

Revision ID: 0005_tune_runs
Revises: 0004_workflows
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_tune_runs"
down_revision = "0004_workflows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tune_runs",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("model_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("space", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("num_trials", sa.Integer, nullable=False),
        sa.Column("max_concurrent", sa.Integer, nullable=False),
        sa.Column("num_workers", sa.Integer, nullable=False),
        sa.Column("scheduler", sa.JSON, nullable=False),
        sa.Column("dataset_version_id", sa.String(64), nullable=False),
        sa.Column("best_version", sa.String(64), nullable=True),
        sa.Column("artifact_prefix", sa.String(512), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["app_id", "model_id"], ["models.app_id", "models.id"], ondelete="CASCADE",
                                name="fk_tune_runs_model"),
    )
    op.create_table(
        "tune_trials",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("model_id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("trial_id", sa.String(64), primary_key=True),
        sa.Column("version_id", sa.String(64), nullable=False),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id", "model_id", "run_id"],
                                ["tune_runs.app_id", "tune_runs.model_id", "tune_runs.id"], ondelete="CASCADE",
                                name="fk_tune_trials_run"),
    )


def downgrade() -> None:
    op.drop_table("tune_trials")
    op.drop_table("tune_runs")
