"""The SQL of profile enrichment: which recipients are due, and writing what was fetched.

A recipient is due when it is not yet proofed (``ENRICHABLE_STATUSES``), came from a CDP
profile (``external_profile_id``) and was never enriched or enriched before the cutoff
(``domain.profile_enrichment``). Pages are read by recipient id (keyset), one query per page;
a page is written with one executemany UPDATE that re-checks the same conditions, so a
recipient claimed for proofing meanwhile, or enriched by another run, is left alone.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.models import Campaign, Organization, OrganizationIntegration, Recipient
from mail_pipeline.domain.campaigns import IntegrationKind, OrganizationStatus
from mail_pipeline.domain.profile_enrichment import ENRICHABLE_STATUSES


@dataclass(frozen=True)
class DueRecipient:
    id: int
    campaign_id: int
    profile_id: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class CampaignDesign:
    organization_id: int
    campaign_id: int
    design: dict[str, Any]


def _due(cutoff: datetime) -> ColumnElement[bool]:
    return and_(
        Recipient.status.in_(ENRICHABLE_STATUSES),
        Recipient.external_profile_id.is_not(None),
        or_(Recipient.profile_enriched_at.is_(None), Recipient.profile_enriched_at < cutoff),
    )


class ProfileEnrichmentGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    def campaigns_due(
        self, cutoff: datetime, organization_id: int | None = None
    ) -> list[CampaignDesign]:
        """Campaigns with due recipients, of active organizations with an enabled Klaviyo
        integration (one query), in (organization, campaign) order."""
        has_due = exists().where(Recipient.campaign_id == Campaign.id, _due(cutoff))
        has_cdp = exists().where(
            OrganizationIntegration.organization_id == Campaign.organization_id,
            OrganizationIntegration.kind == IntegrationKind.KLAVIYO,
            OrganizationIntegration.enabled.is_(True),
        )
        query = (
            select(Campaign.organization_id, Campaign.id, Campaign.design)
            .join(Organization, Organization.id == Campaign.organization_id)
            .where(Organization.status == OrganizationStatus.ACTIVE, has_cdp, has_due)
            .order_by(Campaign.organization_id, Campaign.id)
        )
        if organization_id is not None:
            query = query.where(Campaign.organization_id == organization_id)
        return [
            CampaignDesign(org_id, campaign_id, dict(design or {}))
            for org_id, campaign_id, design in self.session.execute(query)
        ]

    def due_page(
        self,
        organization_id: int,
        campaign_ids: Collection[int],
        cutoff: datetime,
        *,
        after_id: int,
        limit: int,
    ) -> list[DueRecipient]:
        """Up to ``limit`` due recipients of these campaigns with ids above ``after_id``."""
        rows = self.session.execute(
            select(
                Recipient.id,
                Recipient.campaign_id,
                Recipient.external_profile_id,
                Recipient.properties,
            )
            .where(
                Recipient.organization_id == organization_id,
                Recipient.campaign_id.in_(set(campaign_ids)),
                Recipient.id > after_id,
                _due(cutoff),
            )
            .order_by(Recipient.id)
            .limit(limit)
        )
        return [
            DueRecipient(rid, campaign_id, str(profile_id), dict(properties or {}))
            for rid, campaign_id, profile_id, properties in rows
        ]

    def record_enrichment(
        self,
        properties_by_id: Sequence[tuple[int, dict[str, Any]]],
        cutoff: datetime,
        now: datetime,
    ) -> None:
        """Store each recipient's new properties and ``profile_enriched_at = now``, if it is
        still due (one executemany statement)."""
        if not properties_by_id:
            return
        table: Table = Recipient.__table__  # type: ignore[assignment]
        statement = (
            update(table)
            .where(
                table.c.id == bindparam("b_id"),
                # no IN (...): an expanding list cannot be used with executemany
                or_(*(table.c.status == status for status in ENRICHABLE_STATUSES)),
                or_(table.c.profile_enriched_at.is_(None), table.c.profile_enriched_at < cutoff),
            )
            .values(properties=bindparam("b_properties"), profile_enriched_at=now, updated_at=now)
        )
        self.session.execute(
            statement,
            [{"b_id": rid, "b_properties": properties} for rid, properties in properties_by_id],
        )
