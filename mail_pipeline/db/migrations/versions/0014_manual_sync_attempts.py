"""manual sync attempts

A manual sync request whose run was lost (its worker killed, its host gone) is launched
again, up to a limit, instead of failing at once: ``attempt`` counts the runs asked for it
(1 for the first; existing requests were on their first).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("manual_sync_triggers") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("manual_sync_triggers") as batch:
        batch.drop_column("attempt")
