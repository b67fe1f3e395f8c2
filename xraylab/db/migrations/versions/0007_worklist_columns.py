"""What a radiologist's worklist shows and finds (issue 31): a study's patient sex, patient age (a DICOM Age
String, 034Y) and study description, and an index on (patient_id, hospital) for a patient's prior studies. On
MariaDB the patient id is compared byte for byte from now on, as hospital names are (0005): its default collation
would take "P1", "p1" and "P1 " for one patient, and show one patient's film as another's prior.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.execute("ALTER TABLE studies MODIFY patient_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL")
    op.add_column("studies", sa.Column("patient_sex", sa.String(1), nullable=True))
    op.add_column("studies", sa.Column("patient_age", sa.String(4), nullable=True))
    op.add_column("studies", sa.Column("study_description", sa.String(64), nullable=True))
    op.create_index("ix_studies_patient", "studies", ["patient_id", "hospital"])


def downgrade() -> None:
    op.drop_index("ix_studies_patient", table_name="studies")
    op.drop_column("studies", "study_description")
    op.drop_column("studies", "patient_age")
    op.drop_column("studies", "patient_sex")
    if op.get_bind().dialect.name == "mysql":
        op.execute("ALTER TABLE studies MODIFY patient_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE "
                   "utf8mb4_unicode_ci NULL")
