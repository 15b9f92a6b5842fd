"""The demo data's rows: organizations, their integrations, campaigns and blocklist entries.

Every write is find-or-create on the row's natural key (an organization's slug, a campaign's
name within its organization, an integration's kind, a blocklist entry's value), so seeding
twice leaves the same rows. Each method flushes what it wrote in the caller's session; the
caller's unit of work commits.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mail_pipeline.db.models import BlocklistEntry, Campaign, Organization, OrganizationIntegration
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus, IntegrationKind, Postage

#: ``blocklist_entries.kind`` of an email entry (the value is the email's key).
EMAIL = "email"


class DemoGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    def upsert_organization(
        self,
        slug: str,
        *,
        name: str,
        country: str,
        stripe_customer_id: str,
        return_address: dict[str, Any],
        trusted: bool = False,
    ) -> int:
        """The organization with ``slug`` (created with ``name`` and ``country`` if missing),
        its billing customer, return address and upload trust set; its id."""
        org = self.session.scalar(select(Organization).where(Organization.slug == slug))
        if org is None:
            org = Organization(slug=slug, name=name, country=country)
            self.session.add(org)
        org.stripe_customer_id = stripe_customer_id
        org.return_address = return_address
        org.auto_commit_uploads = trusted
        self.session.flush()
        return org.id

    def campaign_id(self, organization_slug: str, name: str) -> int | None:
        return self.session.scalar(
            select(Campaign.id)
            .join(Organization, Organization.id == Campaign.organization_id)
            .where(Organization.slug == organization_slug, Campaign.name == name)
        )

    def ensure_integration(
        self,
        organization_id: int,
        kind: IntegrationKind,
        *,
        secret_ref: str,
        settings: dict[str, Any],
    ) -> None:
        """The organization's integration of ``kind`` with the demo's ``settings``: added
        with ``secret_ref`` if missing; an existing one keeps its secret reference."""
        existing = self.session.scalar(
            select(OrganizationIntegration).where(
                OrganizationIntegration.organization_id == organization_id,
                OrganizationIntegration.kind == kind,
            )
        )
        if existing is None:
            self.session.add(
                OrganizationIntegration(
                    organization_id=organization_id,
                    kind=kind,
                    secret_ref=secret_ref,
                    settings=settings,
                )
            )
        elif existing.settings != settings:
            existing.settings = dict(settings)
        self.session.flush()

    def upsert_campaign(
        self,
        organization_id: int,
        name: str,
        *,
        mode: CampaignMode,
        status: CampaignStatus,
        segment_id: str | None,
        design: dict[str, Any],
        holdout_percentage: Decimal,
        postage: Postage,
        downgrade_after_days: int | None,
        default_start_date: date,
    ) -> None:
        """The organization's campaign called ``name``: created with ``mode`` and ``status``
        if missing (an existing campaign keeps its own, which the pipeline may have moved on);
        its segment, design, holdout and postage set; a start date if it has none."""
        campaign = self.session.scalar(
            select(Campaign).where(
                Campaign.organization_id == organization_id, Campaign.name == name
            )
        )
        if campaign is None:
            campaign = Campaign(
                organization_id=organization_id, name=name, campaign_mode=mode, status=status
            )
            self.session.add(campaign)
        campaign.provider_segment_id = segment_id
        campaign.design = design
        campaign.holdout_percentage = holdout_percentage
        campaign.postage = postage
        campaign.postage_downgrade_after_days = downgrade_after_days
        campaign.start_date = campaign.start_date or default_start_date
        self.session.flush()

    def block_email(self, organization_id: int, email_key: str, reason: str) -> bool:
        """Put an email key on the organization's blocklist; False if it already is."""
        exists = self.session.scalar(
            select(BlocklistEntry.id).where(
                BlocklistEntry.organization_id == organization_id,
                BlocklistEntry.kind == EMAIL,
                BlocklistEntry.value == email_key,
            )
        )
        if exists is not None:
            return False
        self.session.add(
            BlocklistEntry(
                organization_id=organization_id, kind=EMAIL, value=email_key, reason=reason
            )
        )
        self.session.flush()
        return True

    def campaigns_with_segment(self, organization_slug: str) -> list[int]:
        """Ids of the organization's campaigns that sync from a CDP segment, in id order."""
        return list(
            self.session.scalars(
                select(Campaign.id)
                .join(Organization, Organization.id == Campaign.organization_id)
                .where(
                    Organization.slug == organization_slug,
                    Campaign.provider_segment_id.is_not(None),
                )
                .order_by(Campaign.id)
            )
        )
