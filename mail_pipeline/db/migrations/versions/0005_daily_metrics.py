"""daily metrics and campaign results

Derived tables the metrics assets rebuild from the base tables: daily order metrics (per New
York day, organization, campaign or none, and currency), daily recipient metrics (per day and
campaign: the day's transitions, postcards accepted, recipients by status at the end of the
day), daily spend (per day, campaign and currency) and campaign results (one row per
campaign). Indexes for the day queries: recipients by ``status_changed_at``, mailpieces by
``accepted_at`` and by (status, ``last_event_at``). On PostgreSQL, statistics on the orders'
New York day with their organization and currency, so the planner knows a year of orders
makes tens of thousands of day groups, not millions, and aggregates them in parallel.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import mail_pipeline.db.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign_results",
        sa.Column(
            "campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("mailed_recipients", sa.Integer(), nullable=False),
        sa.Column("mailed_converted", sa.Integer(), nullable=False),
        sa.Column("mailed_rate", sa.Double(), nullable=True),
        sa.Column("holdout_recipients", sa.Integer(), nullable=False),
        sa.Column("holdout_converted", sa.Integer(), nullable=False),
        sa.Column("holdout_rate", sa.Double(), nullable=True),
        sa.Column("lift", sa.Double(), nullable=True),
        sa.Column("lift_low", sa.Double(), nullable=True),
        sa.Column("lift_high", sa.Double(), nullable=True),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("verdict_reason", sa.Text(), nullable=True),
        sa.Column("postcards_mailed", sa.Integer(), nullable=False),
        sa.Column("attributed_orders", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column(
            "spend_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "attributed_revenue_minor",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("cpa_minor", sa.Double(), nullable=True),
        sa.Column("roas", sa.Double(), nullable=True),
        sa.Column(
            "spend_by_currency",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "revenue_by_currency",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("computed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_results_campaign_id_campaigns"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_campaign_results_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaign_results")),
    )
    with op.batch_alter_table("campaign_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_campaign_results_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "daily_order_metrics",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("cancelled_orders", sa.Integer(), nullable=False),
        sa.Column(
            "gross_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "refunded_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "revenue_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("offer_code_orders", sa.Integer(), nullable=False),
        sa.Column(
            "offer_code_revenue_minor",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("email_orders", sa.Integer(), nullable=False),
        sa.Column(
            "email_revenue_minor",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("address_orders", sa.Integer(), nullable=False),
        sa.Column(
            "address_revenue_minor",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("holdout_orders", sa.Integer(), nullable=False),
        sa.Column(
            "holdout_revenue_minor",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("computed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daily_order_metrics")),
    )
    with op.batch_alter_table("daily_order_metrics", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_daily_order_metrics_campaign_id_day"),
            ["campaign_id", "day"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_daily_order_metrics_day_organization_id"),
            ["day", "organization_id"],
            unique=False,
        )

    op.create_table(
        "daily_recipient_metrics",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column(
            "campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("proofed", sa.Integer(), nullable=False),
        sa.Column("mailed", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("returned", sa.Integer(), nullable=False),
        sa.Column("errored", sa.Integer(), nullable=False),
        sa.Column("postcards_mailed", sa.Integer(), nullable=False),
        sa.Column("unpriced_postcards", sa.Integer(), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("status_address_enrichable", sa.Integer(), nullable=False),
        sa.Column("status_address_enriching", sa.Integer(), nullable=False),
        sa.Column("status_pending", sa.Integer(), nullable=False),
        sa.Column("status_proofing_staged", sa.Integer(), nullable=False),
        sa.Column("status_proofing", sa.Integer(), nullable=False),
        sa.Column("status_proofed", sa.Integer(), nullable=False),
        sa.Column("status_sending_staged", sa.Integer(), nullable=False),
        sa.Column("status_sending", sa.Integer(), nullable=False),
        sa.Column("status_sent", sa.Integer(), nullable=False),
        sa.Column("status_received", sa.Integer(), nullable=False),
        sa.Column("status_skipped", sa.Integer(), nullable=False),
        sa.Column("status_holdout", sa.Integer(), nullable=False),
        sa.Column("status_blacklisted", sa.Integer(), nullable=False),
        sa.Column("status_error", sa.Integer(), nullable=False),
        sa.Column("computed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "campaign_id", name=op.f("pk_daily_recipient_metrics")),
    )
    with op.batch_alter_table("daily_recipient_metrics", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_daily_recipient_metrics_organization_id_day"),
            ["organization_id", "day"],
            unique=False,
        )

    op.create_table(
        "daily_spend",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column(
            "campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("postcards", sa.Integer(), nullable=False),
        sa.Column(
            "spend_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("computed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "campaign_id", "currency", name=op.f("pk_daily_spend")),
    )
    with op.batch_alter_table("daily_spend", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_daily_spend_organization_id_day"),
            ["organization_id", "day"],
            unique=False,
        )

    with op.batch_alter_table("mailpieces", schema=None) as batch_op:
        batch_op.create_index("ix_mailpieces_accepted_at", ["accepted_at"], unique=False)
        batch_op.create_index(
            "ix_mailpieces_status_last_event_at", ["status", "last_event_at"], unique=False
        )

    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.create_index(
            "ix_recipients_status_changed_at", ["status_changed_at"], unique=False
        )

    if op.get_bind().dialect.name == "postgresql":
        # The expression is the one ``db.metrics.MetricsGateway.local_day`` groups by.
        op.execute(
            "CREATE STATISTICS st_orders_new_york_day (ndistinct) ON "
            "(CAST(timezone('America/New_York', ordered_at) AS DATE)), organization_id, "
            "currency FROM orders"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP STATISTICS IF EXISTS st_orders_new_york_day")
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_status_changed_at")

    with op.batch_alter_table("mailpieces", schema=None) as batch_op:
        batch_op.drop_index("ix_mailpieces_status_last_event_at")
        batch_op.drop_index("ix_mailpieces_accepted_at")

    with op.batch_alter_table("daily_spend", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_daily_spend_organization_id_day"))

    op.drop_table("daily_spend")
    with op.batch_alter_table("daily_recipient_metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_daily_recipient_metrics_organization_id_day"))

    op.drop_table("daily_recipient_metrics")
    with op.batch_alter_table("daily_order_metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_daily_order_metrics_day_organization_id"))
        batch_op.drop_index(batch_op.f("ix_daily_order_metrics_campaign_id_day"))

    op.drop_table("daily_order_metrics")
    with op.batch_alter_table("campaign_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_results_organization_id"))

    op.drop_table("campaign_results")
