"""campaign lifecycle

The lifecycle (``domain.lifecycle``) records when a campaign became Active and why it was
completed (``campaigns.activated_at``, ``campaigns.completed_reason``), and which nightly
step was done for which New York night (``nightly_step_runs``, one row per night and step).
Existing campaigns keep NULLs: an Active campaign with no ``activated_at`` counts its postage
downgrade from its start date, else its creation.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import mail_pipeline.db.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("completed_reason", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "activated_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True
            )
        )
    op.create_table(
        "nightly_step_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("night", sa.Date(), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column(
            "summary",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "completed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nightly_step_runs")),
        sa.UniqueConstraint("night", "step", name=op.f("uq_nightly_step_runs_night_step")),
    )


def downgrade() -> None:
    op.drop_table("nightly_step_runs")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("activated_at")
        batch_op.drop_column("completed_reason")
