"""batch leases and print attempts

Claims become leases (``batch_leases``); a recipient's postcard may have a second print
attempt after the printer failed an accepted piece (``mailpieces.attempt``).

Batches claimed before this revision get a lease that expires 15 minutes (a run's maximum
runtime) after the upgrade: runs in flight during the upgrade finish undisturbed, and a batch
whose run is gone is recovered then.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

import mail_pipeline.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PROOFING = ("ProofingStaged", "Proofing")
_MAILING = ("SendingStaged", "Sending")


def upgrade() -> None:
    op.create_table(
        "batch_leases",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "stage",
            sa.Enum(
                "proofing",
                "mailing",
                name="claim_stage",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("expires_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("takes", sa.Integer(), nullable=False),
        sa.Column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_batch_leases_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_batch_leases")),
    )
    with op.batch_alter_table("batch_leases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_batch_leases_expires_at"), ["expires_at"], unique=False
        )

    with op.batch_alter_table("mailpieces", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("attempt", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch_op.drop_constraint(batch_op.f("uq_mailpieces_recipient_id"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_mailpieces_recipient_id_attempt"), ["recipient_id", "attempt"]
        )

    _lease_existing_claims()


def _lease_existing_claims() -> None:
    recipients = sa.table(
        "recipients",
        sa.column("batch_id", sa.String),
        sa.column("organization_id", sa.Integer),
        sa.column("status", sa.String),
        sa.column("claimed_by_run", sa.String),
    )
    leases = sa.table(
        "batch_leases",
        sa.column("batch_id", sa.String),
        sa.column("organization_id", sa.Integer),
        sa.column("stage", sa.String),
        sa.column("holder", sa.String),
        sa.column("expires_at", mail_pipeline.db.types.UTCDateTime(timezone=True)),
        sa.column("takes", sa.Integer),
        sa.column("created_at", mail_pipeline.db.types.UTCDateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    claimed = (
        sa.select(
            recipients.c.batch_id,
            sa.func.min(recipients.c.organization_id),
            sa.case((sa.func.min(recipients.c.status).in_(_PROOFING), "proofing"), else_="mailing"),
            sa.func.max(recipients.c.claimed_by_run),
            sa.bindparam("expires_at", now + timedelta(minutes=15), type_=leases.c.expires_at.type),
            sa.literal(0),
            sa.bindparam("created_at", now, type_=leases.c.created_at.type),
        )
        .where(recipients.c.status.in_(_PROOFING + _MAILING), recipients.c.batch_id.is_not(None))
        .group_by(recipients.c.batch_id)
    )
    op.execute(
        leases.insert().from_select(
            [
                "batch_id",
                "organization_id",
                "stage",
                "holder",
                "expires_at",
                "takes",
                "created_at",
            ],
            claimed,
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("mailpieces", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_mailpieces_recipient_id_attempt"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_mailpieces_recipient_id"), ["recipient_id"]
        )
        batch_op.drop_column("attempt")

    with op.batch_alter_table("batch_leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batch_leases_expires_at"))

    op.drop_table("batch_leases")
