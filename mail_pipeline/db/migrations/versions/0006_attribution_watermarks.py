"""attribution watermarks

Attribution stops marking every order it examines (an update of each order row) and keeps,
per organization, how far it has examined: ``attribution_state`` (the ``orders.updated_at``
through which every change was examined, and the ``ordered_at`` cut-off of the last run),
with an index on orders by organization and ``updated_at`` to read the changes since.
``orders.attribution_processed_at`` and its index go (the downgrade brings them back empty,
which the old code reads as "never examined"). The credit tables (attributions,
holdout_matches: derived rows attribution rebuilds) lose their foreign keys; the attribution
asset check holds their references instead, at a third of the cost of a backfill's writes.
No rows are carried over: the first run after the upgrade examines every order once more,
which changes nothing where the decision is the one stored.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mail_pipeline.db.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The credit tables' foreign keys that go: (column, parent table).
_REFERENCES = (
    ("order_id", "orders"),
    ("recipient_id", "recipients"),
    ("campaign_id", "campaigns"),
    ("organization_id", "organizations"),
)


def upgrade() -> None:
    op.create_table(
        "attribution_state",
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "examined_through", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "ordered_through", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("updated_at", mail_pipeline.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_attribution_state_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_attribution_state")),
    )
    for table in ("attributions", "holdout_matches"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, parent in _REFERENCES:
                batch_op.drop_constraint(op.f(f"fk_{table}_{column}_{parent}"), type_="foreignkey")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_organization_id_attribution_processed_at")
        batch_op.drop_column("attribution_processed_at")
        batch_op.create_index(
            "ix_orders_organization_id_updated_at", ["organization_id", "updated_at"], unique=False
        )


def downgrade() -> None:
    for table in ("attributions", "holdout_matches"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, parent in _REFERENCES:
                batch_op.create_foreign_key(
                    op.f(f"fk_{table}_{column}_{parent}"), parent, [column], ["id"]
                )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_organization_id_updated_at")
        batch_op.add_column(
            sa.Column(
                "attribution_processed_at",
                mail_pipeline.db.types.UTCDateTime(timezone=True),
                nullable=True,
            )
        )
        batch_op.create_index(
            "ix_orders_organization_id_attribution_processed_at",
            ["organization_id", "attribution_processed_at"],
            unique=False,
        )
    op.drop_table("attribution_state")
