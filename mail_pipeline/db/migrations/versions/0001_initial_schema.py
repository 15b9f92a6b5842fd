"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import mail_pipeline.db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "enrichment_cache",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lookup_key", sa.String(length=200), nullable=False),
        sa.Column("matched", sa.Boolean(), nullable=False),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrichment_cache")),
        sa.UniqueConstraint("lookup_key", name=op.f("uq_enrichment_cache_lookup_key")),
    )
    with op.batch_alter_table("enrichment_cache", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_enrichment_cache_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "organizations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "churned",
                "disabled",
                name="organization_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("churned_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("printer_preference", sa.String(length=32), nullable=True),
        sa.Column(
            "csm_cadence",
            sa.Enum(
                "weekly",
                "biweekly",
                name="csm_cadence",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "csm_cadence_changed_at",
            mail_pipeline.db.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("stripe_customer_id", sa.String(length=64), nullable=True),
        sa.Column("auto_commit_uploads", sa.Boolean(), nullable=False),
        sa.Column(
            "return_address",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("slug", name=op.f("uq_organizations_slug")),
    )
    op.create_table(
        "audits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("source_message_id", sa.String(length=128), nullable=True),
        sa.Column("requested_by", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "findings",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_audits_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audits")),
        sa.UniqueConstraint("source_message_id", name=op.f("uq_audits_source_message_id")),
    )
    with op.batch_alter_table("audits", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audits_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "blocklist_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('email', 'address')", name=op.f("ck_blocklist_entries_kind")),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_blocklist_entries_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocklist_entries")),
        sa.UniqueConstraint(
            "organization_id",
            "kind",
            "value",
            name=op.f("uq_blocklist_entries_organization_id_kind_value"),
        ),
    )
    with op.batch_alter_table("blocklist_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_blocklist_entries_kind_value"), ["kind", "value"], unique=False
        )

    op.create_table(
        "campaigns",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "campaign_mode",
            sa.Enum(
                "automated",
                "one_off",
                name="campaign_mode",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "Pending",
                "Active",
                "Paused",
                "Completed",
                name="campaign_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("provider_segment_id", sa.String(length=128), nullable=True),
        sa.Column(
            "design",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "postage",
            sa.Enum(
                "first_class",
                "standard",
                name="postage",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("postage_downgrade_after_days", sa.Integer(), nullable=True),
        sa.Column(
            "postage_downgraded_at",
            mail_pipeline.db.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("mail_date", sa.Date(), nullable=True),
        sa.Column("holdout_percentage", sa.Numeric(precision=5, scale=2), nullable=False),
        sa.Column("attribution_window_days", sa.Integer(), nullable=False),
        sa.Column("daily_send_cap", sa.Integer(), nullable=True),
        sa.Column("total_send_cap", sa.Integer(), nullable=True),
        sa.Column("completed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_synced_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "attribution_window_days > 0", name=op.f("ck_campaigns_attribution_window")
        ),
        sa.CheckConstraint(
            "holdout_percentage >= 0 AND holdout_percentage <= 100",
            name=op.f("ck_campaigns_holdout"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_campaigns_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_campaigns_organization_id_status"),
            ["organization_id", "status"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_campaigns_status_campaign_mode"),
            ["status", "campaign_mode"],
            unique=False,
        )

    op.create_table(
        "enrichment_batches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("recipient_count", sa.Integer(), nullable=False),
        sa.Column("matched_count", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("completed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_enrichment_batches_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrichment_batches")),
        sa.UniqueConstraint("batch_id", name=op.f("uq_enrichment_batches_batch_id")),
    )
    with op.batch_alter_table("enrichment_batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrichment_batches_status"), ["status"], unique=False)

    op.create_table(
        "orders",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "source",
            sa.Enum(
                "klaviyo",
                "ometria",
                "shopify",
                name="order_source",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("external_order_id", sa.String(length=128), nullable=False),
        sa.Column("email_key", sa.String(length=320), nullable=True),
        sa.Column("address_key", sa.String(length=300), nullable=True),
        sa.Column(
            "total_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("ordered_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column(
            "attribution_processed_at",
            mail_pipeline.db.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_orders_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint(
            "organization_id",
            "source",
            "external_order_id",
            name=op.f("uq_orders_organization_id_source_external_order_id"),
        ),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_orders_ordered_at"), ["ordered_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_orders_organization_id_attribution_processed_at"),
            ["organization_id", "attribution_processed_at"],
            unique=False,
        )

    op.create_table(
        "organization_integrations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "kind",
            sa.Enum(
                "klaviyo",
                "ometria",
                "shopify",
                name="integration_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("secret_ref", sa.String(length=200), nullable=False),
        sa.Column(
            "settings",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_organization_integrations_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization_integrations")),
        sa.UniqueConstraint(
            "organization_id",
            "kind",
            name=op.f("uq_organization_integrations_organization_id_kind"),
        ),
    )
    op.create_table(
        "reports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "content",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("sent_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_reports_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
        sa.UniqueConstraint(
            "organization_id",
            "kind",
            "period_start",
            name=op.f("uq_reports_organization_id_kind_period_start"),
        ),
    )
    op.create_table(
        "campaign_sync_locks",
        sa.Column(
            "campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("token", sa.Integer(), nullable=False),
        sa.Column("acquired_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_sync_locks_campaign_id_campaigns"),
        ),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaign_sync_locks")),
    )
    op.create_table(
        "manual_sync_triggers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("synced_count", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("launched_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_manual_sync_triggers_campaign_id_campaigns"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_manual_sync_triggers_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manual_sync_triggers")),
    )
    with op.batch_alter_table("manual_sync_triggers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_manual_sync_triggers_status_created_at"),
            ["status", "created_at"],
            unique=False,
        )

    op.create_table(
        "recipients",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "status",
            sa.Enum(
                "AddressEnrichable",
                "AddressEnriching",
                "Pending",
                "ProofingStaged",
                "Proofing",
                "Proofed",
                "SendingStaged",
                "Sending",
                "Sent",
                "Received",
                "Skipped",
                "Holdout",
                "Blacklisted",
                "Error",
                name="recipient_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column(
            "error_from_status",
            sa.Enum(
                "AddressEnrichable",
                "AddressEnriching",
                "Pending",
                "ProofingStaged",
                "Proofing",
                "Proofed",
                "SendingStaged",
                "Sending",
                "Sent",
                "Received",
                "Skipped",
                "Holdout",
                "Blacklisted",
                "Error",
                name="recipient_error_from_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
        ),
        sa.Column(
            "status_changed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("external_profile_id", sa.String(length=128), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("email_key", sa.String(length=320), nullable=True),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("last_name", sa.String(length=100), nullable=True),
        sa.Column("address1", sa.String(length=200), nullable=True),
        sa.Column("address2", sa.String(length=200), nullable=True),
        sa.Column("city", sa.String(length=100), nullable=True),
        sa.Column("region", sa.String(length=100), nullable=True),
        sa.Column("postal_code", sa.String(length=20), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("address_key", sa.String(length=300), nullable=True),
        sa.Column(
            "properties",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("batch_id", sa.String(length=64), nullable=True),
        sa.Column("claimed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claimed_by_run", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("proof_front_url", sa.Text(), nullable=True),
        sa.Column("proof_back_url", sa.Text(), nullable=True),
        sa.Column(
            "proof_image_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("proof_renderer", sa.String(length=32), nullable=True),
        sa.Column("proofed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("received_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_recipients_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_recipients_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipients")),
        sa.UniqueConstraint(
            "campaign_id",
            "external_profile_id",
            name=op.f("uq_recipients_campaign_id_external_profile_id"),
        ),
    )
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.create_index("ix_recipients_batch", ["batch_id"], unique=False)
        batch_op.create_index("ix_recipients_claim", ["status", "id"], unique=False)
        batch_op.create_index(
            "ix_recipients_claim_org", ["status", "organization_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_recipients_org_address", ["organization_id", "address_key"], unique=False
        )
        batch_op.create_index(
            "ix_recipients_org_email", ["organization_id", "email_key"], unique=False
        )
        batch_op.create_index("ix_recipients_stale", ["status", "claimed_at"], unique=False)
        batch_op.create_index(
            "ix_recipients_status_campaign", ["status", "campaign_id"], unique=False
        )

    op.create_table(
        "attributions",
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
        sa.Column(
            "attributed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.CheckConstraint(
            "match_type IN ('email', 'address')", name=op.f("ck_attributions_match_type")
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_attributions_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_attributions_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_attributions_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipients.id"],
            name=op.f("fk_attributions_recipient_id_recipients"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attributions")),
        sa.UniqueConstraint("order_id", name=op.f("uq_attributions_order_id")),
    )
    with op.batch_alter_table("attributions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attributions_campaign_id_attributed_at"),
            ["campaign_id", "attributed_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_attributions_recipient_id"), ["recipient_id"], unique=False
        )

    op.create_table(
        "mailpieces",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "recipient_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("printer", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("provider_piece_id", sa.String(length=128), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "requested",
                "created",
                "in_production",
                "mailed",
                "in_transit",
                "in_local_area",
                "processed_for_delivery",
                "re_routed",
                "delivered",
                "returned",
                "cancelled",
                "failed",
                name="mailpiece_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "postage",
            sa.Enum(
                "first_class",
                "standard",
                name="mailpiece_postage",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("cost_minor", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("expected_delivery_date", sa.Date(), nullable=True),
        sa.Column("accepted_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_event_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("delivered_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_mailpieces_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_mailpieces_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"], ["recipients.id"], name=op.f("fk_mailpieces_recipient_id_recipients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailpieces")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_mailpieces_idempotency_key")),
        sa.UniqueConstraint(
            "printer", "provider_piece_id", name=op.f("uq_mailpieces_printer_provider_piece_id")
        ),
        sa.UniqueConstraint("recipient_id", name=op.f("uq_mailpieces_recipient_id")),
    )
    with op.batch_alter_table("mailpieces", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mailpieces_campaign_id_status"), ["campaign_id", "status"], unique=False
        )

    op.create_table(
        "side_effects",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "recipient_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipients.id"],
            name=op.f("fk_side_effects_recipient_id_recipients"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_side_effects")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_side_effects_idempotency_key")),
        sa.UniqueConstraint("recipient_id", "kind", name=op.f("uq_side_effects_recipient_id_kind")),
    )
    op.create_table(
        "mailpiece_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "mailpiece_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("printer", sa.String(length=32), nullable=False),
        sa.Column("provider_event_id", sa.String(length=200), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "requested",
                "created",
                "in_production",
                "mailed",
                "in_transit",
                "in_local_area",
                "processed_for_delivery",
                "re_routed",
                "delivered",
                "returned",
                "cancelled",
                "failed",
                name="mailpiece_event_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("occurred_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailpiece_id"],
            ["mailpieces.id"],
            name=op.f("fk_mailpiece_events_mailpiece_id_mailpieces"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailpiece_events")),
        sa.UniqueConstraint(
            "printer",
            "provider_event_id",
            name=op.f("uq_mailpiece_events_printer_provider_event_id"),
        ),
    )
    with op.batch_alter_table("mailpiece_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mailpiece_events_mailpiece_id"), ["mailpiece_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("mailpiece_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailpiece_events_mailpiece_id"))

    op.drop_table("mailpiece_events")
    op.drop_table("side_effects")
    with op.batch_alter_table("mailpieces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailpieces_campaign_id_status"))

    op.drop_table("mailpieces")
    with op.batch_alter_table("attributions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attributions_recipient_id"))
        batch_op.drop_index(batch_op.f("ix_attributions_campaign_id_attributed_at"))

    op.drop_table("attributions")
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_status_campaign")
        batch_op.drop_index("ix_recipients_stale")
        batch_op.drop_index("ix_recipients_org_email")
        batch_op.drop_index("ix_recipients_org_address")
        batch_op.drop_index("ix_recipients_claim_org")
        batch_op.drop_index("ix_recipients_claim")
        batch_op.drop_index("ix_recipients_batch")

    op.drop_table("recipients")
    with op.batch_alter_table("manual_sync_triggers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_manual_sync_triggers_status_created_at"))

    op.drop_table("manual_sync_triggers")
    op.drop_table("campaign_sync_locks")
    op.drop_table("reports")
    op.drop_table("organization_integrations")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_organization_id_attribution_processed_at"))
        batch_op.drop_index(batch_op.f("ix_orders_ordered_at"))

    op.drop_table("orders")
    with op.batch_alter_table("enrichment_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrichment_batches_status"))

    op.drop_table("enrichment_batches")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaigns_status_campaign_mode"))
        batch_op.drop_index(batch_op.f("ix_campaigns_organization_id_status"))

    op.drop_table("campaigns")
    with op.batch_alter_table("blocklist_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blocklist_entries_kind_value"))

    op.drop_table("blocklist_entries")
    with op.batch_alter_table("audits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audits_organization_id"))

    op.drop_table("audits")
    op.drop_table("organizations")
    with op.batch_alter_table("enrichment_cache", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrichment_cache_created_at"))

    op.drop_table("enrichment_cache")
