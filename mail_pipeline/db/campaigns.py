"""Campaign and organization queries the sync needs, and the sync's writes.

The sync inserts new recipients in one statement, and rewrites recipients it rejected
earlier (Error with no ``error_from_status``, from a CDP) when it decides them again: a
recipient that stays in Error gets the fresh data and reason (guarded on still being an
Error-at-sync), one that leaves Error moves through the state machine's guarded transition
(:class:`~mail_pipeline.db.recipients.RecipientGateway`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.models import (
    BlocklistEntry,
    Campaign,
    Order,
    Organization,
    OrganizationIntegration,
    Recipient,
)
from mail_pipeline.domain.campaigns import (
    SYNCABLE_STATUSES,
    CampaignMode,
    CampaignStatus,
    IntegrationKind,
    OrganizationStatus,
)
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.domain.suppressions import SuppressionRules
from mail_pipeline.domain.sync import NON_EXCLUDING_STATES, NOT_MAILED_STATES, ProfileFacts

MAILED_STATES = frozenset({RecipientStatus.SENT, RecipientStatus.RECEIVED})


def rules_of(campaign: Campaign, organization: Organization) -> SuppressionRules:
    return SuppressionRules.of(
        min_days_between_mailings=organization.min_days_between_mailings,
        recent_purchase_days=organization.recent_purchase_days,
        allowed_regions=campaign.allowed_regions,
        allowed_postal_prefixes=campaign.allowed_postal_prefixes,
    )


#: The recipient columns a sync writes from a profile (``judge_profile``'s values).
PROFILE_COLUMNS = (
    "email",
    "email_key",
    "first_name",
    "last_name",
    "address1",
    "address2",
    "city",
    "region",
    "postal_code",
    "country",
    "address_key",
    "properties",
)


@dataclass(frozen=True)
class IntegrationRef:
    """Where an organization's CDP lives; ``secret_ref`` names the credential's location."""

    organization_id: int
    kind: IntegrationKind
    secret_ref: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class CampaignForSync:
    id: int
    name: str
    organization_id: int
    organization_active: bool
    mode: CampaignMode
    status: CampaignStatus
    segment_id: str | None
    holdout_percentage: Any
    total_send_cap: int | None
    cdp: IntegrationRef | None
    #: The organization's country (ISO alpha-2): an address without a country is taken to
    #: be there.
    home_country: str | None = None
    #: The organization's preferred printer (routes where that printer serves).
    printer_preference: str | None = None
    #: The organization's and the campaign's suppressions (``domain.suppressions``).
    rules: SuppressionRules = field(default_factory=SuppressionRules)


@dataclass(frozen=True)
class SyncError:
    """A recipient the sync rejected earlier (Error, no ``error_from_status``, from a CDP):
    decided again when its profile comes back."""

    recipient_id: int
    profile_id: str
    status_reason: str | None
    values: dict[str, Any]


def _candidate_filter() -> Any:
    """Seed 001 §1: automated in Pending/Active/Paused, one_off only while Pending."""
    return and_(
        Campaign.status.in_(SYNCABLE_STATUSES),
        or_(
            Campaign.campaign_mode == CampaignMode.AUTOMATED,
            and_(
                Campaign.campaign_mode == CampaignMode.ONE_OFF,
                Campaign.status == CampaignStatus.PENDING,
            ),
        ),
    )


class CampaignGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    def sync_candidates(self) -> dict[int, list[int]]:
        """Campaign ids to sync, grouped by (active) organization, in id order."""
        rows = self.session.execute(
            select(Campaign.organization_id, Campaign.id)
            .join(Organization, Organization.id == Campaign.organization_id)
            .where(Organization.status == OrganizationStatus.ACTIVE, _candidate_filter())
            .order_by(Campaign.organization_id, Campaign.id)
        )
        grouped: dict[int, list[int]] = defaultdict(list)
        for organization_id, campaign_id in rows:
            grouped[organization_id].append(campaign_id)
        return dict(grouped)

    def organization_campaign_ids(self, organization_id: int) -> list[int]:
        return list(
            self.session.scalars(
                select(Campaign.id)
                .where(Campaign.organization_id == organization_id, _candidate_filter())
                .order_by(Campaign.id)
            )
        )

    def campaign_for_sync(self, campaign_id: int) -> CampaignForSync | None:
        row = self.session.execute(
            select(Campaign, Organization)
            .join(Organization, Organization.id == Campaign.organization_id)
            .where(Campaign.id == campaign_id)
        ).one_or_none()
        if row is None:
            return None
        campaign, organization = row
        integration = self.session.scalar(
            select(OrganizationIntegration).where(
                OrganizationIntegration.organization_id == campaign.organization_id,
                OrganizationIntegration.kind == IntegrationKind.KLAVIYO,
                OrganizationIntegration.enabled.is_(True),
            )
        )
        cdp = (
            None
            if integration is None
            else IntegrationRef(
                integration.organization_id,
                integration.kind,
                integration.secret_ref,
                dict(integration.settings or {}),
            )
        )
        return CampaignForSync(
            id=campaign.id,
            name=campaign.name,
            organization_id=campaign.organization_id,
            organization_active=organization.status == OrganizationStatus.ACTIVE,
            mode=campaign.campaign_mode,
            status=campaign.status,
            segment_id=campaign.provider_segment_id,
            holdout_percentage=campaign.holdout_percentage,
            total_send_cap=campaign.total_send_cap,
            cdp=cdp,
            home_country=organization.country,
            printer_preference=organization.printer_preference,
            rules=rules_of(campaign, organization),
        )

    def existing_facts(self, campaign_id: int) -> list[ProfileFacts]:
        rows = self.session.execute(
            select(
                Recipient.external_profile_id,
                Recipient.email_key,
                Recipient.address_key,
                Recipient.id,
            )
            .where(Recipient.campaign_id == campaign_id)
            .order_by(Recipient.id)
        )
        return [
            ProfileFacts(profile_id or f"recipient:{rid}", email, address, bool(address))
            for profile_id, email, address, rid in rows
        ]

    def sync_errors(self, campaign_id: int) -> dict[str, SyncError]:
        """The campaign's recipients rejected at sync, by CDP profile id. Recipients in
        Error from proofing or mailing (``error_from_status`` set) and uploaded ones are not
        among them: a sync never touches those."""
        columns = [getattr(Recipient, name) for name in PROFILE_COLUMNS]
        rows = self.session.execute(
            select(Recipient.id, Recipient.external_profile_id, Recipient.status_reason, *columns)
            .where(
                Recipient.campaign_id == campaign_id,
                Recipient.status == RecipientStatus.ERROR,
                Recipient.error_from_status.is_(None),
                Recipient.source == "cdp",
                Recipient.external_profile_id.is_not(None),
            )
            .order_by(Recipient.id)
        )
        return {
            profile_id: SyncError(
                rid, profile_id, reason, dict(zip(PROFILE_COLUMNS, rest, strict=True))
            )
            for rid, profile_id, reason, *rest in rows
        }

    def refresh_sync_error(self, recipient_id: int, values: dict[str, Any], now: Any) -> bool:
        """Rewrite a recipient that stays in Error at sync with the fresh data and reason;
        False when it is no longer an Error-at-sync (an operator retried it meanwhile)."""
        result = self.session.execute(
            update(Recipient)
            .where(
                Recipient.id == recipient_id,
                Recipient.status == RecipientStatus.ERROR,
                Recipient.error_from_status.is_(None),
            )
            .values({**values, "updated_at": now})
            .returning(Recipient.id),
            execution_options={"synchronize_session": False},
        )
        return result.scalar_one_or_none() is not None

    def people_in_other_campaigns(
        self, organization_id: int, campaign_id: int, *, mailed_ones: bool = True
    ) -> tuple[dict[str, str], dict[str, str]]:
        """email key -> campaign name and address key -> campaign name for the people the
        organization's other campaigns hold (in a state that excludes them); without
        ``mailed_ones``, not those already mailed (the days-between-mailings rule judges
        them: :meth:`recently_mailed`)."""
        excluded = set(NON_EXCLUDING_STATES) | (set() if mailed_ones else set(MAILED_STATES))
        rows = self.session.execute(
            select(Recipient.email_key, Recipient.address_key, Campaign.name)
            .join(Campaign, Campaign.id == Recipient.campaign_id)
            .where(
                Recipient.organization_id == organization_id,
                Recipient.campaign_id != campaign_id,
                Recipient.status.not_in(sorted(excluded)),
            )
            .order_by(Recipient.id)
        )
        emails: dict[str, str] = {}
        addresses: dict[str, str] = {}
        for email, address, name in rows:
            if email:
                emails.setdefault(email, name)
            if address:
                addresses.setdefault(address, name)
        return emails, addresses

    def recently_mailed(
        self, organization_id: int, since: datetime, *, not_recipient: int | None = None
    ) -> dict[str, tuple[str, datetime]]:
        """Email and address keys of the people the organization mailed after ``since`` ->
        (campaign name, when), the latest mailing per key (other than ``not_recipient``)."""
        stmt = (
            select(Recipient.email_key, Recipient.address_key, Campaign.name, Recipient.sent_at)
            .join(Campaign, Campaign.id == Recipient.campaign_id)
            .where(
                Recipient.organization_id == organization_id,
                Recipient.status.in_(sorted(MAILED_STATES)),
                Recipient.sent_at >= since,
            )
        )
        if not_recipient is not None:
            stmt = stmt.where(Recipient.id != not_recipient)
        out: dict[str, tuple[str, datetime]] = {}
        for email, address, name, sent_at in self.session.execute(stmt):
            for key in (email, address):
                if key and sent_at is not None and (key not in out or out[key][1] < sent_at):
                    out[key] = (name, sent_at)
        return out

    def recent_buyers(self, organization_id: int, since: datetime) -> dict[str, datetime]:
        """Email and address keys of the people whose order that counts (not cancelled)
        was placed after ``since`` -> their latest order time."""
        rows = self.session.execute(
            select(Order.email_key, Order.address_key, func.max(Order.ordered_at))
            .where(
                Order.organization_id == organization_id,
                Order.ordered_at >= since,
                Order.cancelled.is_(False),
            )
            .group_by(Order.email_key, Order.address_key)
        )
        out: dict[str, datetime] = {}
        for email, address, ordered_at in rows:
            for key in (email, address):
                if key and (key not in out or out[key] < ordered_at):
                    out[key] = ordered_at
        return out

    def blocklist(self, organization_id: int) -> tuple[frozenset[str], frozenset[str]]:
        rows = self.session.execute(
            select(BlocklistEntry.kind, BlocklistEntry.value).where(
                or_(
                    BlocklistEntry.organization_id == organization_id,
                    BlocklistEntry.organization_id.is_(None),
                )
            )
        )
        emails: set[str] = set()
        addresses: set[str] = set()
        for kind, value in rows:
            (emails if kind == "email" else addresses).add(value)
        return frozenset(emails), frozenset(addresses)

    def mailable_count(self, campaign_id: int) -> int:
        """Recipients of the campaign that are or will be mailed (for the total send cap)."""
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(Recipient)
                .where(
                    Recipient.campaign_id == campaign_id, Recipient.status.not_in(NOT_MAILED_STATES)
                )
            )
            or 0
        )

    def add_recipients(self, rows: Sequence[dict[str, Any]]) -> int:
        if rows:
            self.session.execute(insert(Recipient), list(rows))
        return len(rows)

    def recipients_with_organizations(
        self, recipient_ids: Iterable[int]
    ) -> dict[int, tuple[Recipient, Organization]]:
        """The given recipients (ORM rows, usable after the session) with their
        organizations; ids that name no recipient are absent."""
        rows = self.session.execute(
            select(Recipient, Organization)
            .join(Organization, Organization.id == Recipient.organization_id)
            .where(Recipient.id.in_(list(recipient_ids)))
        )
        return {recipient.id: (recipient, organization) for recipient, organization in rows}

    def mark_synced(self, campaign_ids: Iterable[int], when: Any) -> None:
        for campaign in self.session.scalars(
            select(Campaign).where(Campaign.id.in_(list(campaign_ids)))
        ):
            campaign.last_synced_at = when
