"""Who may read which patients (users' hospitals and the network-wide reading grant), directory accounts, one
login throttle for every name, device cookies, and the studies each worklist page listed (the audit trail)

Existing users are given no hospital and no grant: each reads no patient until an admin says which hospitals
(``xraylab users hospitals NAME --add H``) or grants network-wide reading (``xraylab users grant-network``).
``xraylab users list`` shows who reads nothing yet.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


# A hospital's name is compared byte for byte everywhere: MariaDB's default utf8mb4 collation would take
# "Northgate" (or "Nörthgate") for "northgate" in SQL, and a scope's SQL and Python checks would disagree.
HOSPITAL = sa.String(128).with_variant(mysql.VARCHAR(128, charset="utf8mb4", collation="utf8mb4_bin"), "mysql")


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.execute("ALTER TABLE studies MODIFY hospital VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL")
    op.add_column("users", sa.Column("network_reader", sa.Boolean(), nullable=False, server_default=sa.text("0")))
    op.add_column("users", sa.Column("source", sa.String(16), nullable=False, server_default="local"))
    # The per-account counters move to login_throttle (one rule for known and unknown names).
    op.execute("ALTER TABLE users DROP COLUMN failed_logins")  # SQLite 3.35+ and MariaDB drop in place
    op.execute("ALTER TABLE users DROP COLUMN locked_until")
    op.create_table(
        "user_hospitals",
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("hospital", HOSPITAL, primary_key=True),
    )
    op.create_table(
        "login_throttle",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "login_devices",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_login_devices_user_id", "login_devices", ["user_id"])
    op.create_table(
        "audit_listed",
        sa.Column("audit_id", sa.Integer(), sa.ForeignKey("audit_events.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("study_id", sa.Integer(), primary_key=True),
    )
    op.create_index("ix_audit_listed_study", "audit_listed", ["study_id"])


def downgrade() -> None:
    op.drop_table("audit_listed")  # with their indexes (MariaDB keeps one a foreign key needs until then)
    op.drop_table("login_devices")
    op.drop_table("login_throttle")
    op.drop_table("user_hospitals")
    op.add_column("users", sa.Column("failed_logins", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.add_column("users", sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
    for column in ("source", "network_reader"):
        op.execute(f"ALTER TABLE users DROP COLUMN {column}")
    if op.get_bind().dialect.name == "mysql":
        op.execute("ALTER TABLE studies MODIFY hospital VARCHAR(128) NULL")
