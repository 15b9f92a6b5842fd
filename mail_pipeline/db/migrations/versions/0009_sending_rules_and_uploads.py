"""sending rules and uploads

The kill switch and daily cap per organization (``organizations.mailing_paused_at``,
``mailing_paused_reason``, ``daily_send_cap``), suppression settings
(``min_days_between_mailings``, ``recent_purchase_days``; per campaign ``allowed_regions``,
``allowed_postal_prefixes``), the daily cap counters (``send_cap_usage``) and uploaded CSV
lists (``upload_batches``). All new columns are NULL for existing rows: no cap, no pause,
no suppression beyond the blocklist, as before.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import mail_pipeline.db.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TIME = mail_pipeline.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mailing_paused_at", _TIME, nullable=True))
        batch_op.add_column(sa.Column("mailing_paused_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("daily_send_cap", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("min_days_between_mailings", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("recent_purchase_days", sa.Integer(), nullable=True))
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("allowed_regions", _JSON, nullable=True))
        batch_op.add_column(sa.Column("allowed_postal_prefixes", _JSON, nullable=True))
    op.create_table(
        "send_cap_usage",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", _ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "scope_id", "day", name=op.f("pk_send_cap_usage")),
    )
    op.create_table(
        "upload_batches",
        sa.Column("id", _ID, nullable=False),
        sa.Column("organization_id", _ID, nullable=False),
        sa.Column("campaign_id", _ID, nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("rows_total", sa.Integer(), nullable=False),
        sa.Column("rows_accepted", sa.Integer(), nullable=False),
        sa.Column("rows_skipped", sa.Integer(), nullable=False),
        sa.Column("rows_rejected", sa.Integer(), nullable=False),
        sa.Column("rejection_reason", sa.Text(), nullable=True),
        sa.Column("report_csv", sa.Text(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("decided_at", _TIME, nullable=True),
        sa.CheckConstraint(
            "status IN ('awaiting_approval', 'committed', 'rejected')",
            name=op.f("ck_upload_batches_status"),
        ),
        sa.CheckConstraint(
            "kind IN ('recipients', 'do_not_mail')", name=op.f("ck_upload_batches_kind")
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_upload_batches_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_upload_batches_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upload_batches")),
        sa.UniqueConstraint("source", "sha256", name=op.f("uq_upload_batches_source_sha256")),
    )
    op.create_index(
        "ix_upload_batches_status_created_at", "upload_batches", ["status", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_upload_batches_status_created_at", table_name="upload_batches")
    op.drop_table("upload_batches")
    op.drop_table("send_cap_usage")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("allowed_postal_prefixes")
        batch_op.drop_column("allowed_regions")
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("recent_purchase_days")
        batch_op.drop_column("min_days_between_mailings")
        batch_op.drop_column("daily_send_cap")
        batch_op.drop_column("mailing_paused_reason")
        batch_op.drop_column("mailing_paused_at")
