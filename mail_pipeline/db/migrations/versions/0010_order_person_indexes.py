"""orders by person

The recent-purchaser suppression (``domain.suppressions``) looks up one person's orders in
an organization right before each new postcard: ``orders`` gets indexes on
(organization_id, email_key) and (organization_id, address_key). On PostgreSQL they are
built CONCURRENTLY (outside the migration's transaction), so order syncs keep writing while
a large table is indexed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = {
    "ix_orders_organization_id_email_key": ["organization_id", "email_key"],
    "ix_orders_organization_id_address_key": ["organization_id", "address_key"],
}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.get_context().autocommit_block():
        for name, columns in _INDEXES.items():
            op.create_index(
                name,
                "orders",
                columns,
                unique=False,
                postgresql_concurrently=postgres,
                if_not_exists=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in _INDEXES:
            op.drop_index(name, table_name="orders", if_exists=True)
