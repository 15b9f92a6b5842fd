"""Organizations, campaigns, recipients and orders for attribution tests, row by row."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from mail_pipeline.db.engine import SessionFactory, unit_of_work
from mail_pipeline.db.models import (
    Attribution,
    AttributionState,
    Campaign,
    HoldoutMatch,
    Order,
    Organization,
    Recipient,
    utcnow,
)
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus, IntegrationKind
from mail_pipeline.domain.recipients import RecipientStatus

#: A fixed "now": every order and mailing of the tests is before it.
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
MAILED = NOW - timedelta(days=10)


@dataclass(frozen=True)
class Credit:
    recipient_id: int
    campaign_id: int
    match_type: str
    revenue_minor: int
    currency: str = "USD"


class World:
    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.sessions: SessionFactory = functools.partial(unit_of_work, db_url)
        self._ids = itertools.count(1)
        #: How attribution runs read candidates (see ``AttributionGateway.load``).
        self.key_filter_max_orders = 1_000

    def organization(self) -> int:
        n = next(self._ids)
        with self.sessions() as session:
            org = Organization(name=f"Org {n}", slug=f"org-{n}", country="US")
            session.add(org)
            session.flush()
            return org.id

    def campaign(self, organization_id: int, window_days: int = 30) -> int:
        n = next(self._ids)
        with self.sessions() as session:
            campaign = Campaign(
                organization_id=organization_id,
                name=f"Campaign {n}",
                campaign_mode=CampaignMode.ONE_OFF,
                status=CampaignStatus.ACTIVE,
                attribution_window_days=window_days,
            )
            session.add(campaign)
            session.flush()
            return campaign.id

    def recipient(
        self,
        campaign_id: int,
        *,
        status: RecipientStatus = RecipientStatus.SENT,
        sent_at: datetime | None = MAILED,
        created_at: datetime | None = None,
        email_key: str | None = None,
        address_key: str | None = None,
        offer_code: str | None = None,
    ) -> int:
        n = next(self._ids)
        with self.sessions() as session:
            org_id = session.get_one(Campaign, campaign_id).organization_id
            row = Recipient(
                organization_id=org_id,
                campaign_id=campaign_id,
                status=status,
                first_name=f"R{n}",
                email_key=email_key,
                address_key=address_key,
                offer_code=offer_code,
                sent_at=sent_at if status is not RecipientStatus.HOLDOUT else None,
                created_at=created_at or (sent_at or MAILED) - timedelta(days=2),
            )
            session.add(row)
            session.flush()
            return row.id

    def holdout(self, campaign_id: int, *, created_at: datetime, **keys: Any) -> int:
        return self.recipient(
            campaign_id, status=RecipientStatus.HOLDOUT, sent_at=None, created_at=created_at, **keys
        )

    def order(
        self,
        organization_id: int,
        ordered_at: datetime,
        *,
        email_key: str | None = None,
        address_key: str | None = None,
        codes: Sequence[str] = (),
        total: int = 5000,
        refunded: int = 0,
        cancelled: bool = False,
        currency: str = "USD",
        stamped: datetime | None = None,
    ) -> int:
        """An order synced when it was placed (``updated_at = ordered_at``: long before the
        tests' runs, so past every watermark's lag), or at ``stamped``."""
        n = next(self._ids)
        with self.sessions() as session:
            row = Order(
                organization_id=organization_id,
                source=IntegrationKind.SHOPIFY,
                external_order_id=f"o-{n}",
                email_key=email_key,
                address_key=address_key,
                discount_codes=list(codes),
                total_minor=total,
                refunded_minor=refunded,
                currency=currency,
                ordered_at=ordered_at,
                cancelled=cancelled,
                updated_at=stamped or ordered_at,
            )
            session.add(row)
            session.flush()
            return row.id

    def change_order(self, order_id: int, at: datetime | None = None, **values: Any) -> None:
        """What the order sync does on a change: new values and ``updated_at`` stamped by
        its clock (``at``: a stamp of another moment, as a slow writer's would be)."""
        with self.sessions() as session:
            session.execute(
                sa.update(Order)
                .where(Order.id == order_id)
                .values(updated_at=at or utcnow(), **values)
            )

    def set_recipient(self, recipient_id: int, **values: Any) -> None:
        with self.sessions() as session:
            session.execute(
                sa.update(Recipient).where(Recipient.id == recipient_id).values(**values)
            )

    def credits(
        self, model: type[Attribution] | type[HoldoutMatch] = Attribution
    ) -> dict[int, Credit]:
        with self.sessions() as session:
            rows = session.scalars(sa.select(model)).all()
            return {
                r.order_id: Credit(
                    r.recipient_id, r.campaign_id, r.match_type, r.revenue_minor, r.currency
                )
                for r in rows
            }

    def holdout_credits(self) -> dict[int, Credit]:
        return self.credits(HoldoutMatch)

    def watermark(self, organization_id: int) -> tuple[datetime, datetime] | None:
        """The organization's (examined_through, ordered_through), if it has one."""
        with self.sessions() as session:
            state = session.get(AttributionState, organization_id)
            return None if state is None else (state.examined_through, state.ordered_through)

    def insert(self, model: type[Attribution] | type[HoldoutMatch], **values: Any) -> None:
        """A row written behind attribution's back (bad data for the checks)."""
        stamp = "attributed_at" if model is Attribution else "matched_at"
        with self.sessions() as session:
            session.execute(sa.insert(model).values(currency="USD", **{stamp: NOW}, **values))
