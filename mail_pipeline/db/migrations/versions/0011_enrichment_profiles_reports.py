"""address enrichment, profile enrichment and report delivery

``enrichment_batches`` gains what the batch flow records (``services.address_enrichment``):
when the batch was submitted, until when it may run, and how its recipients ended (from the
cache, matched, unmatched, refused). ``recipients`` gains ``profile_enriched_at`` (when the
CDP properties the organization's designs use were last fetched) and ``proof_defaults``
(the placeholders a proof filled from the design's defaults). ``reports`` gains its
delivery (the email's recipients, the provider's message id, delivered / bounced times and
the reason), and ``report_email_events`` records each email event applied, once.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import mail_pipeline.db.types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TIME = mail_pipeline.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("enrichment_batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("submitted_at", _TIME, nullable=True))
        batch_op.add_column(sa.Column("deadline_at", _TIME, nullable=True))
        batch_op.add_column(
            sa.Column("cached_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("unmatched_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("refused_count", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("profile_enriched_at", _TIME, nullable=True))
        batch_op.add_column(sa.Column("proof_defaults", _JSON, nullable=True))
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sent_to", _JSON, nullable=True))
        batch_op.add_column(sa.Column("provider", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("message_id", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("delivered_at", _TIME, nullable=True))
        batch_op.add_column(sa.Column("bounced_at", _TIME, nullable=True))
        batch_op.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch_op.create_index("ix_reports_message_id", ["message_id"])
        batch_op.create_index("ix_reports_status", ["status"])
    op.create_table(
        "report_email_events",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("report_id", _ID, nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=256), nullable=False),
        sa.Column("occurred_at", _TIME, nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("applied_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.id"], name=op.f("fk_report_email_events_report_id_reports")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_report_email_events")),
    )
    op.create_index("ix_report_email_events_report_id", "report_email_events", ["report_id"])


def downgrade() -> None:
    op.drop_index("ix_report_email_events_report_id", table_name="report_email_events")
    op.drop_table("report_email_events")
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index("ix_reports_status")
        batch_op.drop_index("ix_reports_message_id")
        for column in (
            "status_reason",
            "bounced_at",
            "delivered_at",
            "message_id",
            "provider",
            "sent_to",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_column("proof_defaults")
        batch_op.drop_column("profile_enriched_at")
    with op.batch_alter_table("enrichment_batches", schema=None) as batch_op:
        for column in (
            "refused_count",
            "unmatched_count",
            "cached_count",
            "deadline_at",
            "submitted_at",
        ):
            batch_op.drop_column(column)
