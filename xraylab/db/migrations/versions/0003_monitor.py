"""the model monitor: monitors, monitor settings, results and alerts

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "monitors",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model_version", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("last_prediction_id", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("performance_key", sa.String(64), nullable=True),
        # MEDIUMTEXT on MySQL/MariaDB: a streak per metric and hospital outgrows TEXT's 64 KB in a large network.
        sa.Column("streaks", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql"), nullable=True),
        sa.Column("last_health_at", _tz(), nullable=True),
        sa.Column("last_drift_at", _tz(), nullable=True),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
    )
    op.create_table(
        "monitor_settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
    )
    op.create_table(
        "monitor_results",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("run_at", _tz(), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("hospital", sa.String(128), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_monitor_results_series", "monitor_results", ["model_version", "metric", "hospital", "run_at"])
    op.create_index("ix_monitor_results_age", "monitor_results", ["model_version", "run_at"])
    op.create_table(
        "monitor_alerts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("hospital", sa.String(128), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("limit_value", sa.Float(), nullable=False),
        sa.Column("message", sa.String(512), nullable=False),
        sa.Column("fired_at", _tz(), nullable=False),
        sa.Column("resolved_at", _tz(), nullable=True),
    )
    op.create_index("ix_monitor_alerts_open", "monitor_alerts", ["model_version", "resolved_at"])
    op.create_index("ix_monitor_alerts_fired", "monitor_alerts", ["fired_at"])


def downgrade() -> None:
    op.drop_table("monitor_alerts")
    op.drop_table("monitor_results")
    op.drop_table("monitor_settings")
    op.drop_table("monitors")
