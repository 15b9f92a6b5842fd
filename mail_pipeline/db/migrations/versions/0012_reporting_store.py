"""reporting store

The tables the brands' dashboard reads (``services.reporting_sync``): campaign performance
per New York day and currency (``reporting_campaign_days``, unique per campaign, day and
currency), each campaign's totals and lift (``reporting_campaigns``), and how each
organization's last sync went (``reporting_syncs``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mail_pipeline.db.types

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = mail_pipeline.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reporting_campaign_days",
        sa.Column("id", _ID, nullable=False),
        sa.Column("organization_id", _ID, nullable=False),
        sa.Column("campaign_id", _ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("mailed", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("returned", sa.Integer(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("revenue_minor", _ID, nullable=False),
        sa.Column("spend_minor", _ID, nullable=False),
        sa.Column("cpa_minor", sa.Double(), nullable=True),
        sa.Column("roas", sa.Double(), nullable=True),
        sa.Column("synced_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reporting_campaign_days")),
        sa.UniqueConstraint(
            "campaign_id",
            "day",
            "currency",
            name=op.f("uq_reporting_campaign_days_campaign_id_day_currency"),
        ),
    )
    op.create_index(
        "ix_reporting_campaign_days_organization_id_day",
        "reporting_campaign_days",
        ["organization_id", "day"],
    )
    op.create_table(
        "reporting_campaigns",
        sa.Column("campaign_id", _ID, nullable=False),
        sa.Column("organization_id", _ID, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("mailed", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("returned", sa.Integer(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("revenue_minor", _ID, nullable=True),
        sa.Column("spend_minor", _ID, nullable=True),
        sa.Column("cpa_minor", sa.Double(), nullable=True),
        sa.Column("roas", sa.Double(), nullable=True),
        sa.Column("lift", sa.Double(), nullable=True),
        sa.Column("lift_low", sa.Double(), nullable=True),
        sa.Column("lift_high", sa.Double(), nullable=True),
        sa.Column("verdict", sa.String(length=32), nullable=True),
        sa.Column("synced_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_reporting_campaigns")),
    )
    op.create_index(
        "ix_reporting_campaigns_organization_id", "reporting_campaigns", ["organization_id"]
    )
    op.create_table(
        "reporting_syncs",
        sa.Column("organization_id", _ID, nullable=False),
        sa.Column("last_synced_at", _TIME, nullable=True),
        sa.Column("attempted_at", _TIME, nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('ok', 'failed')", name=op.f("ck_reporting_syncs_status")),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_reporting_syncs_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_reporting_syncs")),
    )


def downgrade() -> None:
    op.drop_table("reporting_syncs")
    op.drop_index("ix_reporting_campaigns_organization_id", table_name="reporting_campaigns")
    op.drop_table("reporting_campaigns")
    op.drop_index(
        "ix_reporting_campaign_days_organization_id_day", table_name="reporting_campaign_days"
    )
    op.drop_table("reporting_campaign_days")
