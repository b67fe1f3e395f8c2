"""DICOM studies (their study UID, modality, view position, manufacturer) and the research export log

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE (as in 0002): batch mode's copy-and-drop of `studies` would cascade to every prediction
    # under SQLite's foreign keys.
    op.add_column("studies", sa.Column("study_instance_uid", sa.String(64), nullable=True))
    op.add_column("studies", sa.Column("modality", sa.String(16), nullable=True))
    op.add_column("studies", sa.Column("view_position", sa.String(16), nullable=True))
    op.add_column("studies", sa.Column("manufacturer", sa.String(64), nullable=True))
    op.create_table(
        "research_exports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("pseudonym", sa.String(64), nullable=True),
        sa.Column("bucket", sa.String(255), nullable=True),
        sa.Column("object_key", sa.String(1024), nullable=True),
        sa.Column("band", sa.String(16), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("method", sa.String(255), nullable=True),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("study_id", "key_id", name="uq_research_export_study_key"),
    )
    op.create_index("ix_research_exports_exported_at", "research_exports", ["exported_at"])


def downgrade() -> None:
    op.drop_index("ix_research_exports_exported_at", table_name="research_exports")
    op.drop_table("research_exports")
    for column in ("manufacturer", "view_position", "modality", "study_instance_uid"):
        op.execute(f"ALTER TABLE studies DROP COLUMN {column}")  # SQLite 3.35+ and MariaDB drop in place
