"""app environment: the kind of environment a database serves

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mail_pipeline.db.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "app_environment",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column(
            "environment",
            sa.Enum(
                "local",
                "test",
                "production",
                name="app_environment",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("stamped_by", sa.String(length=200), nullable=False),
        sa.Column("stamped_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_app_environment_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_environment")),
    )


def downgrade() -> None:
    op.drop_table("app_environment")
