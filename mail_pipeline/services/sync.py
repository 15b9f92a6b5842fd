"""Recipient sync (seed 001 §1): CDP segment profiles become recipients.

One organization at a time, its campaigns serially (so cross-campaign exclusion reads what
the previous campaign just wrote), each under the campaign's sync lock shared with manual
syncs. For each campaign the mode gate is checked again - it may have changed since it was
selected, and manual syncs enter here too:

- automated campaigns sync while Pending, Active or Paused; one_off campaigns only while
  Pending; anything else syncs 0 and says why;
- a one_off without a segment has nothing to sync (its list is uploaded);
- an automated campaign without a segment, or an organization without a CDP integration, is
  a misconfiguration: the campaign is reported as such and the other campaigns still sync.

Every profile the CDP sends is accounted for: a new recipient in the state the rules of
:mod:`mail_pipeline.domain.sync` decide (with a reason for every state that is not mailed), a
recipient in ``Error`` for a malformed profile that has an id, or a named rejection in the
result for one that has not. Re-running a sync creates nothing new.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from mail_pipeline.db.campaigns import CampaignForSync, CampaignGateway, IntegrationRef
from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.locks import CampaignLocks, LockLost
from mail_pipeline.db.models import Recipient, utcnow
from mail_pipeline.domain.addresses import address_key, email_key, normalize_country
from mail_pipeline.domain.campaigns import CampaignMode, is_sync_candidate
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.domain.sync import ProfileFacts, SyncDecider
from mail_pipeline.integrations.errors import IntegrationError
from mail_pipeline.integrations.klaviyo.models import CdpProfile, MalformedProfile, ProfilePage

log = logging.getLogger(__name__)


class CdpDirectory(Protocol):
    """Reads a segment from an organization's CDP (a resource provides it)."""

    def segment_pages(
        self, integration: IntegrationRef, segment_id: str
    ) -> Iterator[ProfilePage]: ...


class Outcome(StrEnum):
    SYNCED = "synced"
    NOT_A_CANDIDATE = "not_a_candidate"
    NO_SEGMENT = "no_segment"
    MISCONFIGURED = "misconfigured"
    LOCKED = "locked"
    FAILED = "failed"


@dataclass
class CampaignSyncResult:
    campaign_id: int
    campaign_name: str
    outcome: Outcome
    detail: str | None = None
    profiles_seen: int = 0
    created: Counter[str] = field(default_factory=Counter)
    #: Profiles without an id, which could not become a recipient: one sentence each.
    rejected: list[str] = field(default_factory=list)


@dataclass
class OrganizationSyncResult:
    organization_id: int
    campaigns: list[CampaignSyncResult] = field(default_factory=list)

    @property
    def created(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for result in self.campaigns:
            total.update(result.created)
        return total

    def with_outcome(self, *outcomes: Outcome) -> list[CampaignSyncResult]:
        return [r for r in self.campaigns if r.outcome in outcomes]

    @property
    def problems(self) -> list[CampaignSyncResult]:
        """Campaigns that need a person: misconfigured, or failed to sync."""
        return self.with_outcome(Outcome.MISCONFIGURED, Outcome.FAILED)


@dataclass(frozen=True)
class SyncSettings:
    holder: str
    lock_ttl: timedelta = timedelta(minutes=30)
    clock: Callable[[], datetime] = utcnow


def sync_organization(
    sessions: SessionFactory,
    cdp: CdpDirectory,
    organization_id: int,
    settings: SyncSettings,
    *,
    campaign_ids: list[int] | None = None,
) -> OrganizationSyncResult:
    """Sync the organization's candidate campaigns (or the given ones), one after another."""
    if campaign_ids is None:
        with sessions() as session:
            campaign_ids = CampaignGateway(session).organization_campaign_ids(organization_id)
    result = OrganizationSyncResult(organization_id)
    for campaign_id in sorted(campaign_ids):
        result.campaigns.append(
            sync_campaign(sessions, cdp, campaign_id, settings, organization_id=organization_id)
        )
    return result


def sync_campaign(
    sessions: SessionFactory,
    cdp: CdpDirectory,
    campaign_id: int,
    settings: SyncSettings,
    *,
    organization_id: int | None = None,
) -> CampaignSyncResult:
    with sessions() as session:
        campaign = CampaignGateway(session).campaign_for_sync(campaign_id)
    if campaign is None:
        return CampaignSyncResult(campaign_id, "?", Outcome.FAILED, "no such campaign")
    result = CampaignSyncResult(campaign.id, campaign.name, Outcome.SYNCED)
    refusal = _refusal(campaign, organization_id)
    if refusal is not None:
        result.outcome, result.detail = refusal
        log.info("campaign %s (%s): %s", campaign.id, campaign.name, result.detail)
        return result
    assert campaign.segment_id is not None and campaign.cdp is not None

    with sessions() as session:
        lease = CampaignLocks(session).acquire(
            campaign.id, settings.holder, settings.lock_ttl, now=settings.clock()
        )
    if lease is None:
        result.outcome = Outcome.LOCKED
        result.detail = "another sync of this campaign holds its lock; it will be synced there"
        return result
    try:
        try:
            pages = list(cdp.segment_pages(campaign.cdp, campaign.segment_id))
        except IntegrationError as exc:
            result.outcome, result.detail = Outcome.FAILED, f"reading the segment failed: {exc}"
            return result
        with sessions() as session:
            CampaignLocks(session).verify(lease, now=settings.clock())
            _write_recipients(CampaignGateway(session), campaign, pages, result, settings.clock())
    except LockLost as exc:
        result.outcome, result.detail = Outcome.FAILED, str(exc)
        result.created.clear()
    except SQLAlchemyError as exc:
        # Rolled back: nothing of this campaign was written; the next campaign still syncs.
        log.exception("campaign %s: writing recipients failed", campaign.id)
        result.outcome = Outcome.FAILED
        result.detail = f"writing recipients failed: {getattr(exc, 'orig', None) or exc}"
        result.created.clear()
    finally:
        with sessions() as session:
            CampaignLocks(session).release(lease)
    return result


def _refusal(campaign: CampaignForSync, organization_id: int | None) -> tuple[Outcome, str] | None:
    if organization_id is not None and campaign.organization_id != organization_id:
        return Outcome.NOT_A_CANDIDATE, (
            f"campaign belongs to organization {campaign.organization_id}, not {organization_id}"
        )
    if not campaign.organization_active:
        return Outcome.NOT_A_CANDIDATE, "the organization is not active"
    if not is_sync_candidate(campaign.mode, campaign.status):
        return Outcome.NOT_A_CANDIDATE, (
            f"a {campaign.mode} campaign in {campaign.status} does not sync"
        )
    if campaign.segment_id is None:
        if campaign.mode == CampaignMode.ONE_OFF:
            return Outcome.NO_SEGMENT, "one_off campaign without a segment: nothing to sync"
        return Outcome.MISCONFIGURED, (
            f"automated campaign {campaign.name!r} (id {campaign.id}) has no provider_segment_id"
        )
    if campaign.cdp is None:
        return Outcome.MISCONFIGURED, (
            f"campaign {campaign.name!r} (id {campaign.id}) has a segment but its "
            "organization has no enabled Klaviyo integration"
        )
    return None


def _write_recipients(
    gateway: CampaignGateway,
    campaign: CampaignForSync,
    pages: list[ProfilePage],
    result: CampaignSyncResult,
    now: datetime,
) -> None:
    blocked_emails, blocked_addresses = gateway.blocklist(campaign.organization_id)
    other_emails, other_addresses = gateway.people_in_other_campaigns(
        campaign.organization_id, campaign.id
    )
    cap = campaign.total_send_cap
    decider = SyncDecider(
        campaign.id,
        holdout_percentage=campaign.holdout_percentage,
        blocked_emails=blocked_emails,
        blocked_addresses=blocked_addresses,
        other_campaign_emails=other_emails,
        other_campaign_addresses=other_addresses,
        remaining_cap=None if cap is None else cap - gateway.mailable_count(campaign.id),
    )
    decider.know_existing(gateway.existing_facts(campaign.id))
    rows: list[dict[str, Any]] = []
    for page in pages:
        for rejected in page.rejected:
            result.profiles_seen += 1
            row = _malformed_row(campaign, rejected, decider, now)
            if row is None:
                result.rejected.append(str(rejected))
            elif row:
                rows.append(row)
        for profile in page.profiles:
            result.profiles_seen += 1
            if len(profile.profile_id) > PROFILE_ID_LIMIT:
                result.rejected.append(
                    f"profile id {profile.profile_id[:40]}... is longer "
                    f"than {PROFILE_ID_LIMIT} characters"
                )
                continue
            row = _profile_row(campaign, profile, decider, now)
            if row:
                rows.append(row)
    gateway.add_recipients(rows)
    gateway.mark_synced([campaign.id], now)
    result.created.update(str(row["status"]) for row in rows)


def _profile_row(
    campaign: CampaignForSync, profile: CdpProfile, decider: SyncDecider, now: datetime
) -> dict[str, Any] | None:
    """The new recipient for ``profile``, or ``None`` when it is already in the campaign."""
    has_any_address = bool(profile.address1 or profile.city or profile.zip)
    country = normalize_country(profile.country)
    key = address_key(profile.address1, profile.zip, country, profile.address2)
    problem = _too_long(profile)
    if problem is None and has_any_address and profile.country and country is None:
        problem = f"unknown country {profile.country!r}"
    if problem is not None:
        email = profile.email if profile.email and len(profile.email) <= EMAIL_LIMIT else None
        return _error_row(
            campaign,
            profile.profile_id,
            email,
            decider,
            now,
            f"profile {profile.profile_id}: {problem}",
            address=key,
        )
    facts = ProfileFacts(profile.profile_id, email_key(profile.email), key, profile.has_address)
    decision = decider.decide(facts)
    if decision is None:
        return None
    return {
        **_base_row(campaign, profile.profile_id, now),
        "status": decision.status,
        "status_reason": decision.reason,
        "email": profile.email,
        "email_key": facts.email_key,
        "first_name": profile.first_name,
        "last_name": profile.last_name,
        "address1": profile.address1,
        "address2": profile.address2,
        "city": profile.city,
        "region": profile.region,
        "postal_code": profile.zip,
        "country": country,
        "address_key": key,
        "properties": dict(profile.properties),
    }


#: Profile field -> (recipient column, what a person calls it). Free text from the CDP is
#: checked against the column's length, so one odd value fails one recipient, not the sync.
_LIMITED_FIELDS = {
    "email": ("email", "email"),
    "first_name": ("first_name", "first name"),
    "last_name": ("last_name", "last name"),
    "address1": ("address1", "address line 1"),
    "address2": ("address2", "address line 2"),
    "city": ("city", "city"),
    "region": ("region", "region"),
    "zip": ("postal_code", "postal code"),
}


def _column_length(column: str) -> int:
    length = getattr(Recipient.__table__.c[column].type, "length", None)
    assert isinstance(length, int), column
    return length


EMAIL_LIMIT = _column_length("email")


PROFILE_ID_LIMIT = _column_length("external_profile_id")


def _too_long(profile: CdpProfile) -> str | None:
    for field_name, (column, label) in _LIMITED_FIELDS.items():
        value = getattr(profile, field_name)
        limit = _column_length(column)
        if value and len(value) > limit:
            return f"{label} is {len(value)} characters long; at most {limit} fit"
    return None


def _malformed_row(
    campaign: CampaignForSync, rejected: MalformedProfile, decider: SyncDecider, now: datetime
) -> dict[str, Any] | None:
    """``None`` for a profile without an id (reported instead); ``{}`` when the profile is
    already a recipient; else an Error recipient carrying the reason."""
    if not rejected.profile_id or len(rejected.profile_id) > PROFILE_ID_LIMIT:
        return None
    return _error_row(campaign, rejected.profile_id, None, decider, now, str(rejected)) or {}


def _error_row(
    campaign: CampaignForSync,
    profile_id: str,
    email: str | None,
    decider: SyncDecider,
    now: datetime,
    reason: str,
    address: str | None = None,
) -> dict[str, Any] | None:
    facts = ProfileFacts(profile_id, email_key(email), address, has_address=False)
    if not decider.claim(facts):
        return None
    return {
        **_base_row(campaign, profile_id, now),
        "status": RecipientStatus.ERROR,
        "status_reason": reason,
        "email": email,
        "email_key": facts.email_key,
        "address_key": address,
        "properties": {},
    }


def _base_row(campaign: CampaignForSync, profile_id: str, now: datetime) -> dict[str, Any]:
    return {
        "organization_id": campaign.organization_id,
        "campaign_id": campaign.id,
        "external_profile_id": profile_id,
        "source": "cdp",
        "status_changed_at": now,
        "created_at": now,
        "updated_at": now,
    }
