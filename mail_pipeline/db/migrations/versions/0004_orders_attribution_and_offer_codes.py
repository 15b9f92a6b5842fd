"""orders, attribution and offer codes

Orders keep their discount codes, refunds and source update time; each organization's order
sync keeps a watermark per source; recipients get an offer code (unique per organization),
drawn from an uploaded pool or generated; attributions may match by offer code; orders
matched to holdout recipients get their own table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import mail_pipeline.db.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_sync_state",
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "source",
            sa.Enum(
                "klaviyo",
                "ometria",
                "shopify",
                name="order_sync_source",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("watermark", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_attempt_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "last_success_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "orders_synced", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_order_sync_state_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("organization_id", "source", name=op.f("pk_order_sync_state")),
    )
    op.create_table(
        "holdout_matches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "recipient_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("match_type", sa.String(length=16), nullable=False),
        sa.Column(
            "revenue_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("matched_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "match_type IN ('offer_code', 'email', 'address')",
            name=op.f("ck_holdout_matches_match_type"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_holdout_matches_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_holdout_matches_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_holdout_matches_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipients.id"],
            name=op.f("fk_holdout_matches_recipient_id_recipients"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holdout_matches")),
        sa.UniqueConstraint("order_id", name=op.f("uq_holdout_matches_order_id")),
    )
    with op.batch_alter_table("holdout_matches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_holdout_matches_campaign_id"), ["campaign_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_holdout_matches_recipient_id"), ["recipient_id"], unique=False
        )

    op.create_table(
        "offer_codes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column(
            "recipient_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("assigned_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_offer_codes_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_offer_codes_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"], ["recipients.id"], name=op.f("fk_offer_codes_recipient_id_recipients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offer_codes")),
        sa.UniqueConstraint(
            "organization_id", "code", name=op.f("uq_offer_codes_organization_id_code")
        ),
        sa.UniqueConstraint("recipient_id", name=op.f("uq_offer_codes_recipient_id")),
    )
    with op.batch_alter_table("offer_codes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_offer_codes_organization_id_campaign_id_recipient_id"),
            ["organization_id", "campaign_id", "recipient_id"],
            unique=False,
        )

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "discount_codes",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=False,
                server_default=sa.text("'[]'"),
            )
        )
        batch_op.add_column(
            sa.Column(
                "refunded_minor",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=False,
                server_default=sa.text("0"),
            )
        )
        batch_op.add_column(
            sa.Column(
                "source_updated_at",
                mail_pipeline.db.types.UTCDateTime(timezone=True),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column(
                "updated_at",
                mail_pipeline.db.types.UTCDateTime(timezone=True),
                nullable=False,
                server_default=sa.func.now(),
            )
        )
        batch_op.create_check_constraint(op.f("ck_orders_total"), "total_minor >= 0")
        batch_op.create_check_constraint(op.f("ck_orders_refunded"), "refunded_minor >= 0")

    with op.batch_alter_table("attributions", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_attributions_match_type"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_attributions_match_type"), "match_type IN ('offer_code', 'email', 'address')"
        )

    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("offer_code", sa.String(length=32), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_recipients_organization_id_offer_code"),
            ["organization_id", "offer_code"],
        )


def downgrade() -> None:
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("uq_recipients_organization_id_offer_code"), type_="unique"
        )
        batch_op.drop_column("offer_code")

    with op.batch_alter_table("attributions", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_attributions_match_type"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_attributions_match_type"), "match_type IN ('email', 'address')"
        )

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_orders_refunded"), type_="check")
        batch_op.drop_constraint(op.f("ck_orders_total"), type_="check")
        batch_op.drop_column("updated_at")
        batch_op.drop_column("source_updated_at")
        batch_op.drop_column("refunded_minor")
        batch_op.drop_column("discount_codes")

    with op.batch_alter_table("offer_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offer_codes_organization_id_campaign_id_recipient_id"))

    op.drop_table("offer_codes")
    with op.batch_alter_table("holdout_matches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_holdout_matches_recipient_id"))
        batch_op.drop_index(batch_op.f("ix_holdout_matches_campaign_id"))

    op.drop_table("holdout_matches")
    op.drop_table("order_sync_state")
