"""the review side: users, sessions, API keys, verdicts, audit events, heatmaps; worklist keys on studies

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# xraylab.bands.BAND_ORDER at the time of writing (a migration does not import code that may change).
BAND_RANKS = {"Pneumonia": 0, "Unsure": 1, "Normal": 2}


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN (SQLite has it): no batch mode, whose copy-and-drop of `studies` would
    # cascade to every prediction under SQLite's foreign keys.
    op.add_column("studies", sa.Column("band_rank", sa.SmallInteger(), nullable=True))
    op.add_column("studies", sa.Column("score", sa.Float(), nullable=True))
    op.add_column("studies", sa.Column("reviewed", sa.Boolean(), nullable=False, server_default=sa.text("0")))
    op.add_column("studies", sa.Column("verdict_count", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.add_column("studies", sa.Column("last_verdict_at", _tz(), nullable=True))
    # Existing studies take the sort keys of their latest prediction.
    latest = "(SELECT {col} FROM predictions p WHERE p.study_id = studies.id ORDER BY p.id DESC LIMIT 1)"
    rank = "CASE " + " ".join(f"WHEN p.band = '{band}' THEN {r}" for band, r in BAND_RANKS.items()) + " ELSE 3 END"
    op.execute(f"UPDATE studies SET score = {latest.format(col='p.score')}, band_rank = {latest.format(col=rank)}")
    op.create_index("ix_studies_worklist", "studies", ["reviewed", "band_rank", sa.text("score DESC"), "id"])
    op.create_index("ix_studies_hospital_worklist", "studies",
                    ["hospital", "reviewed", "band_rank", sa.text("score DESC"), "id"])
    op.create_index("ix_studies_study_date", "studies", ["study_date"])

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.text("0")),
        sa.Column("failed_logins", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("locked_until", _tz(), nullable=True),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("last_login_at", _tz(), nullable=True),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(16), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("last_used_at", _tz(), nullable=True),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("last_seen_at", _tz(), nullable=False),
        sa.Column("expires_at", _tz(), nullable=False),
        sa.Column("ended", sa.Boolean(), nullable=False, server_default=sa.text("0")),
    )
    op.create_index("ix_user_sessions_user_id", "user_sessions", ["user_id"])
    op.create_table(
        "verdicts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("prediction_id", sa.Integer(), sa.ForeignKey("predictions.id", ondelete="SET NULL"), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("created_at", _tz(), nullable=False),
    )
    op.create_index("ix_verdicts_study", "verdicts", ["study_id", "id"])
    op.create_index("ix_verdicts_created_at", "verdicts", ["created_at"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", _tz(), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.String(512), nullable=True),
    )
    op.create_index("ix_audit_study", "audit_events", ["study_id", "id"])
    op.create_index("ix_audit_at", "audit_events", ["at"])
    op.create_table(
        "heatmaps",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("png", sa.LargeBinary(2**24 - 1), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        sa.UniqueConstraint("study_id", "model_version", name="uq_heatmap_study_model"),
    )


def downgrade() -> None:
    for table in ("heatmaps", "audit_events", "verdicts", "user_sessions", "api_keys", "users"):
        op.drop_table(table)
    for index in ("ix_studies_study_date", "ix_studies_hospital_worklist", "ix_studies_worklist"):
        op.drop_index(index, table_name="studies")
    for column in ("last_verdict_at", "verdict_count", "reviewed", "score", "band_rank"):
        # SQLite 3.35+ drops a column in place; alembic's drop_column would ask for batch mode (see upgrade).
        op.execute(f"ALTER TABLE studies DROP COLUMN {column}")
