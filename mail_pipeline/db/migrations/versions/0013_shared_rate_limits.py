"""shared rate limits

One row per vendor rate limit shared by every process on the database
(``db.ratelimit.SharedRateLimiter``): the next free call slot and the clock reading it was
written at, both as epoch seconds. Rows are created on first use; the table starts empty.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shared_rate_limits",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("next_slot_at", sa.Double(), nullable=False),
        sa.Column("clock_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_shared_rate_limits")),
    )


def downgrade() -> None:
    op.drop_table("shared_rate_limits")
