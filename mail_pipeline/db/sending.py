"""The gate before the printer in SQL (rules: ``domain.sending``): what the campaign and
organization say now, daily cap places taken and given back, and the claim filter that
keeps paused and capped campaigns' recipients where they are."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import dialect_insert
from mail_pipeline.db.models import Campaign, Organization, SendCapUsage
from mail_pipeline.domain.sending import CAMPAIGN, ORGANIZATION, GateFacts, capped_reason


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


class SendGate:
    def __init__(self, session: Session) -> None:
        self.session = session

    def facts(self, campaign_id: int) -> GateFacts:
        campaign, organization = self.session.execute(
            select(Campaign, Organization)
            .join(Organization, Organization.id == Campaign.organization_id)
            .where(Campaign.id == campaign_id)
        ).one()
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
        campaign, organization = self.session.execute(
            select(Campaign, Organization)
            .join(Organization, Organization.id == Campaign.organization_id)
            .where(Campaign.id == campaign_id)
        ).one()
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
