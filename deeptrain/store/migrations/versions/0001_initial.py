"""Initial schema: apps, concepts, inputs, annotations, dataset versions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "concepts",
        sa.Column("app_id", sa.String(64), sa.ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "inputs",
        sa.Column("app_id", sa.String(64), sa.ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("storage_key", sa.String(512), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=True),
        sa.Column("metadata_json", sa.JSON, nullable=True),
        sa.Column("split", sa.String(8), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("app_id", "sha256", name="uq_inputs_app_sha256"),
    )
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("input_id", sa.String(128), nullable=False),
        sa.Column("concept_id", sa.String(64), nullable=False),
        sa.Column("value", sa.Boolean, nullable=False),
        sa.Column("top_row", sa.Float, nullable=True),
        sa.Column("left_col", sa.Float, nullable=True),
        sa.Column("bottom_row", sa.Float, nullable=True),
        sa.Column("right_col", sa.Float, nullable=True),
        sa.ForeignKeyConstraint(
            ["app_id", "input_id"], ["inputs.app_id", "inputs.id"], ondelete="CASCADE", name="fk_annotations_input"
        ),
        sa.ForeignKeyConstraint(
            ["app_id", "concept_id"], ["concepts.app_id", "concepts.id"], ondelete="CASCADE",
            name="fk_annotations_concept"
        ),
    )
    op.create_index("ix_annotations_input", "annotations", ["app_id", "input_id"])
    op.create_index("ix_annotations_concept", "annotations", ["app_id", "concept_id"])
    op.create_table(
        "dataset_versions",
        sa.Column("app_id", sa.String(64), sa.ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("storage_prefix", sa.String(512), nullable=False),
        sa.Column("num_inputs", sa.Integer, nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("dataset_versions", "annotations", "inputs", "concepts", "apps"):
        op.drop_table(table)
