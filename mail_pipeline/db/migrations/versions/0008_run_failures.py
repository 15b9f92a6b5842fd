"""run failures

The run-failure sensor records each failed run (``run_failures``: its job, stage,
organization and one redacted line of error) and when people were told about it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mail_pipeline.db.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("job", sa.String(length=200), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=True),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("failed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("notified_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_failures")),
        sa.UniqueConstraint("run_id", name=op.f("uq_run_failures_run_id")),
    )
    op.create_index(
        "ix_run_failures_notified_at_failed_at", "run_failures", ["notified_at", "failed_at"]
    )
    op.create_index(
        "ix_run_failures_organization_id_stage", "run_failures", ["organization_id", "stage"]
    )


def downgrade() -> None:
    op.drop_index("ix_run_failures_organization_id_stage", table_name="run_failures")
    op.drop_index("ix_run_failures_notified_at_failed_at", table_name="run_failures")
    op.drop_table("run_failures")
