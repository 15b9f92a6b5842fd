"""The gate before the printer in SQL (rules: ``domain.sending``): what the campaign and
organization say now, daily cap places taken and given back, and the claim filter that
keeps paused and capped campaigns' recipients where they are."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.campaigns import MAILED_STATES, rules_of
from mail_pipeline.db.engine import dialect_insert
from mail_pipeline.db.models import (
    BlocklistEntry,
    Campaign,
    Order,
    Organization,
    Recipient,
    SendCapUsage,
)
from mail_pipeline.domain.sending import CAMPAIGN, ORGANIZATION, GateFacts, capped_reason
from mail_pipeline.domain.suppressions import (
    BLOCKED_ADDRESS,
    BLOCKED_EMAIL,
    mailed_problem,
    ordered_problem,
    place_problem,
)


def _used(scope: str, scope_id: Any, day: date) -> Any:
    return func.coalesce(
        select(SendCapUsage.used)
        .where(
            SendCapUsage.scope == scope, SendCapUsage.scope_id == scope_id, SendCapUsage.day == day
        )
        .scalar_subquery(),
        0,
    )


def sendable(day: date) -> Any:
    """A condition on ``Campaign`` joined to ``Organization``: not paused, and under both
    daily caps for ``day`` (claims of the mailing stage)."""
    return and_(
        Organization.mailing_paused_at.is_(None),
        or_(
            Campaign.daily_send_cap.is_(None),
            _used(CAMPAIGN, Campaign.id, day) < Campaign.daily_send_cap,
        ),
        or_(
            Organization.daily_send_cap.is_(None),
            _used(ORGANIZATION, Organization.id, day) < Organization.daily_send_cap,
        ),
    )


def _same_person(email_column: Any, address_column: Any, recipient: Recipient) -> list[Any]:
    """Conditions matching ``recipient``'s email key or address key (those it has)."""
    return [
        column == key
        for column, key in (
            (email_column, recipient.email_key),
            (address_column, recipient.address_key),
        )
        if key
    ]


class SendGate:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._loaded: dict[int, tuple[Campaign, Organization]] = {}

    def _owners(self, campaign_id: int) -> tuple[Campaign, Organization]:
        """The campaign and its organization, read once per gate (one transaction)."""
        if campaign_id not in self._loaded:
            campaign, organization = self.session.execute(
                select(Campaign, Organization)
                .join(Organization, Organization.id == Campaign.organization_id)
                .where(Campaign.id == campaign_id)
            ).one()
            self._loaded[campaign_id] = (campaign, organization)
        return self._loaded[campaign_id]

    def suppression(self, recipient: Recipient, now: datetime) -> str | None:
        """Why ``recipient`` must not be mailed now (``domain.suppressions``), or ``None``:
        the do-not-mail list, a mailing by another campaign or an order within the
        organization's days, an address outside the campaign's areas."""
        keys = [
            (kind, key)
            for kind, key in (("email", recipient.email_key), ("address", recipient.address_key))
            if key
        ]
        if keys:
            blocked = self.session.scalar(
                select(BlocklistEntry.kind)
                .where(
                    or_(
                        BlocklistEntry.organization_id == recipient.organization_id,
                        BlocklistEntry.organization_id.is_(None),
                    ),
                    or_(
                        *(
                            and_(BlocklistEntry.kind == k, BlocklistEntry.value == v)
                            for k, v in keys
                        )
                    ),
                )
                .limit(1)
            )
            if blocked is not None:
                return BLOCKED_EMAIL if blocked == "email" else BLOCKED_ADDRESS
        campaign, organization = self._owners(recipient.campaign_id)
        rules = rules_of(campaign, organization)
        mailed_since, ordered_since = rules.mailed_since(now), rules.ordered_since(now)
        person = _same_person(Recipient.email_key, Recipient.address_key, recipient)
        if mailed_since is not None and person:
            mailed = self.session.execute(
                select(Campaign.name, Recipient.sent_at)
                .join(Campaign, Campaign.id == Recipient.campaign_id)
                .where(
                    Recipient.organization_id == recipient.organization_id,
                    Recipient.id != recipient.id,
                    Recipient.status.in_(sorted(MAILED_STATES)),
                    Recipient.sent_at >= mailed_since,
                    or_(*person),
                )
                .order_by(Recipient.sent_at.desc())
                .limit(1)
            ).first()
            if mailed is not None:
                return mailed_problem(rules, mailed.name, mailed.sent_at)
        buyer = _same_person(Order.email_key, Order.address_key, recipient)
        if ordered_since is not None and buyer:
            ordered_at = self.session.scalar(
                select(func.max(Order.ordered_at)).where(
                    Order.organization_id == recipient.organization_id,
                    Order.ordered_at >= ordered_since,
                    Order.cancelled.is_(False),
                    or_(*buyer),
                )
            )
            if ordered_at is not None:
                return ordered_problem(rules, ordered_at)
        return place_problem(rules, recipient.region, recipient.postal_code)

    def facts(self, campaign_id: int) -> GateFacts:
        campaign, organization = self._owners(campaign_id)
        return GateFacts(
            campaign_name=campaign.name,
            campaign_status=campaign.status,
            organization_status=organization.status,
            organization_paused=organization.mailing_paused_at is not None,
            organization_paused_reason=organization.mailing_paused_reason,
        )

    def reserve(self, campaign_id: int, day: date) -> str | None:
        """Take one place under the campaign's and the organization's caps for ``day``;
        ``None`` when taken, else why not (nothing taken then)."""
        campaign, organization = self._owners(campaign_id)
        caps = [
            (ORGANIZATION, organization.id, organization.name, organization.daily_send_cap),
            (CAMPAIGN, campaign.id, campaign.name, campaign.daily_send_cap),
        ]
        taken: list[tuple[str, int]] = []
        for scope, scope_id, name, cap in caps:
            if cap is None:
                continue
            if not self._take(scope, scope_id, day, cap):
                for done_scope, done_id in taken:
                    self._give_back(done_scope, done_id, day)
                return capped_reason(scope, name, cap)
            taken.append((scope, scope_id))
        return None

    def release(self, campaign_id: int, day: date) -> None:
        """Give back the places a postcard took (the printer refused it)."""
        organization_id = self.session.scalar(
            select(Campaign.organization_id).where(Campaign.id == campaign_id)
        )
        self._give_back(CAMPAIGN, campaign_id, day)
        if organization_id is not None:
            self._give_back(ORGANIZATION, organization_id, day)

    def used(self, scope: str, scope_id: int, day: date) -> int:
        return int(self.session.scalar(select(_used(scope, scope_id, day))) or 0)

    def _take(self, scope: str, scope_id: int, day: date, cap: int) -> bool:
        self.session.execute(
            dialect_insert(self.session)(SendCapUsage)
            .values(scope=scope, scope_id=scope_id, day=day, used=0)
            .on_conflict_do_nothing(index_elements=["scope", "scope_id", "day"])
        )
        taken = self.session.scalar(
            update(SendCapUsage)
            .where(
                SendCapUsage.scope == scope,
                SendCapUsage.scope_id == scope_id,
                SendCapUsage.day == day,
                SendCapUsage.used < cap,
            )
            .values(used=SendCapUsage.used + 1)
            .returning(SendCapUsage.used)
        )
        return taken is not None

    def _give_back(self, scope: str, scope_id: int, day: date) -> None:
        self.session.execute(
            update(SendCapUsage)
            .where(
                SendCapUsage.scope == scope,
                SendCapUsage.scope_id == scope_id,
                SendCapUsage.day == day,
                SendCapUsage.used > 0,
            )
            .values(used=SendCapUsage.used - 1)
        )
