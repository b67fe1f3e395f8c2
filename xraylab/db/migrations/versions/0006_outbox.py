"""The delivery outbox (results to each hospital's PACS and RIS, ``xraylab.db.outbox``) and a study's accession
number (the RIS's order, from the DICOM tags).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("studies", sa.Column("accession_number", sa.String(64), nullable=True))
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("prediction_id", sa.Integer(), sa.ForeignKey("predictions.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("destination", sa.String(80), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.Column("message_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("prediction_id", "destination", name="uq_delivery_prediction_destination"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "destination", "next_attempt_at", "id"])
    op.create_index("ix_deliveries_study", "deliveries", ["study_id"])
    op.create_index("ix_deliveries_sent_at", "deliveries", ["sent_at"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_column("studies", "accession_number")
