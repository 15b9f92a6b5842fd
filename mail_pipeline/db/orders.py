"""Orders in SQL: which organizations have an order source, where each sync stands, and the
idempotent upsert of what a source sent.

- :meth:`OrderGateway.upsert` writes a page of orders with one ``INSERT ... ON CONFLICT
  (organization_id, source, external_order_id) DO UPDATE`` per chunk. The update only fires
  when something the business reads changed (total, refund, cancellation, codes, keys), so
  reading the same orders again - the safety overlap, an operator's re-sync - changes
  nothing, not even ``updated_at``; a change (a refund) bumps ``updated_at``, which
  attribution reads to revise what it credited. ``updated_at`` is the clock read just
  before the page's first write, in a transaction of one page (``services.order_sync``):
  attribution's watermark relies on changes being stamped no earlier than their
  transaction began, less its 15-minute lag (``db.attribution``). The customer's email and
  address are reduced to matching keys here and never stored.
- :meth:`OrderGateway.record_success` / :meth:`record_failure` keep ``order_sync_state``: the
  watermark moves forward only (an operator's re-sync of old days never moves it back).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.models import (
    Order,
    OrderSyncState,
    Organization,
    OrganizationIntegration,
    utcnow,
)
from mail_pipeline.domain.addresses import address_key, email_key
from mail_pipeline.domain.campaigns import IntegrationKind, OrganizationStatus
from mail_pipeline.domain.fields import unstorable_character
from mail_pipeline.domain.orders import SourceOrder, normalize_code

#: Rows per INSERT statement (well under SQLite's bound-parameter limit).
_CHUNK = 500
#: The columns an upsert may change on an order already stored.
_MUTABLE = (
    "email_key",
    "address_key",
    "discount_codes",
    "total_minor",
    "refunded_minor",
    "currency",
    "ordered_at",
    "cancelled",
    "source_updated_at",
)


@dataclass(frozen=True)
class SyncState:
    organization_id: int
    source: IntegrationKind
    watermark: datetime | None
    last_success_at: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class UpsertCounts:
    #: Orders stored for the first time.
    inserted: int = 0
    #: Orders already stored whose business fields changed.
    changed: int = 0


def _text(value: str | None) -> str | None:
    """A raw value that can be reduced to a key (one the database can hold), else None."""
    if value is None or unstorable_character(value):
        return None
    return value


def order_row(organization_id: int, order: SourceOrder, now: datetime) -> dict[str, Any]:
    """The ``orders`` row of a source order: matching keys instead of the raw customer."""
    place = order.address
    return {
        "organization_id": organization_id,
        "source": order.source,
        "external_order_id": order.external_id,
        "email_key": email_key(_text(order.email)),
        "address_key": None
        if place is None
        else address_key(
            _text(place.line1), _text(place.postal_code), _text(place.country), _text(place.line2)
        ),
        "discount_codes": sorted({normalize_code(code) for code in order.discount_codes if code}),
        "total_minor": order.total_minor,
        "refunded_minor": order.refunded_minor,
        "currency": order.currency,
        "ordered_at": order.ordered_at,
        "cancelled": order.cancelled,
        "source_updated_at": order.updated_at,
        "created_at": now,
        "updated_at": now,
    }


class OrderGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    def order_integrations(
        self,
        kinds: Iterable[IntegrationKind],
        *,
        organization_ids: Iterable[int] | None = None,
    ) -> list[IntegrationRef]:
        """Enabled integrations of these kinds of active organizations (or of the given
        ones), by organization and kind."""
        stmt = (
            select(OrganizationIntegration)
            .join(Organization, Organization.id == OrganizationIntegration.organization_id)
            .where(
                OrganizationIntegration.kind.in_(list(kinds)),
                OrganizationIntegration.enabled.is_(True),
                Organization.status == OrganizationStatus.ACTIVE,
            )
            .order_by(OrganizationIntegration.organization_id, OrganizationIntegration.kind)
        )
        if organization_ids is not None:
            stmt = stmt.where(OrganizationIntegration.organization_id.in_(list(organization_ids)))
        return [
            IntegrationRef(i.organization_id, i.kind, i.secret_ref, dict(i.settings or {}))
            for i in self.session.scalars(stmt)
        ]

    def states(self, organization_ids: Iterable[int] | None = None) -> list[SyncState]:
        stmt = select(OrderSyncState).order_by(
            OrderSyncState.organization_id, OrderSyncState.source
        )
        if organization_ids is not None:
            stmt = stmt.where(OrderSyncState.organization_id.in_(list(organization_ids)))
        return [
            SyncState(s.organization_id, s.source, s.watermark, s.last_success_at, s.last_error)
            for s in self.session.scalars(stmt)
        ]

    def watermark(self, organization_id: int, source: IntegrationKind) -> datetime | None:
        return self.session.scalar(
            select(OrderSyncState.watermark).where(
                OrderSyncState.organization_id == organization_id,
                OrderSyncState.source == source,
            )
        )

    def upsert(self, organization_id: int, orders: Sequence[SourceOrder]) -> UpsertCounts:
        """Store the orders; return how many were new and how many changed."""
        now = utcnow()
        rows = [order_row(organization_id, order, now) for order in orders]
        inserted = changed = 0
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            for (created,) in self.session.execute(self._upsert(chunk, now)):
                if created == now:
                    inserted += 1
                else:
                    changed += 1
        return UpsertCounts(inserted, changed)

    def _upsert(self, rows: list[dict[str, Any]], now: datetime) -> Any:
        dialect = self.session.get_bind().dialect.name
        insert: Any = (postgresql if dialect == "postgresql" else sqlite).insert(Order)
        stmt = insert.values(rows)
        excluded = stmt.excluded
        differs = or_(*(getattr(Order, c).is_distinct_from(getattr(excluded, c)) for c in _MUTABLE))
        return stmt.on_conflict_do_update(
            index_elements=[Order.organization_id, Order.source, Order.external_order_id],
            set_={**{c: getattr(excluded, c) for c in _MUTABLE}, "updated_at": now},
            where=differs,
        ).returning(Order.created_at)

    def record_success(
        self,
        organization_id: int,
        source: IntegrationKind,
        *,
        read_until: datetime | None,
        orders: int,
        now: datetime | None = None,
    ) -> None:
        """A sync ended well; when it read the source up to ``read_until``, the watermark
        moves there (never back). ``None``: a repair of a range, the watermark stays."""
        state = self._state(organization_id, source)
        if read_until is not None and (state.watermark is None or read_until > state.watermark):
            state.watermark = read_until
        state.last_attempt_at = state.last_success_at = now or utcnow()
        state.last_error = None
        state.orders_synced = (state.orders_synced or 0) + orders

    def record_failure(
        self,
        organization_id: int,
        source: IntegrationKind,
        error: str,
        *,
        now: datetime | None = None,
    ) -> None:
        state = self._state(organization_id, source)
        state.last_attempt_at = now or utcnow()
        state.last_error = error[:2000]

    def _state(self, organization_id: int, source: IntegrationKind) -> OrderSyncState:
        state = self.session.get(OrderSyncState, (organization_id, source), with_for_update=True)
        if state is None:
            state = OrderSyncState(organization_id=organization_id, source=source, orders_synced=0)
            self.session.add(state)
        return state
