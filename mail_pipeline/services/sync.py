"""Recipient sync (seed 001 §1): CDP segment profiles become recipients.

One organization at a time, its campaigns serially (so cross-campaign exclusion reads what
the previous campaign just wrote), each under the campaign's sync lock shared with manual
syncs. Two syncs of one organization forced to run at once (past the run limit of one per
organization) share out its campaigns: each campaign is synced by the one that takes its lock
and reported ``locked``, naming the holder, by the other; and their writes take turns
(:meth:`CampaignLocks.one_writer_per_organization`), so exclusion still sees every
recipient. For each campaign the mode gate is checked again - it may have changed since it
was selected, and manual syncs enter here too:

- automated campaigns sync while Pending, Active or Paused; one_off campaigns only while
  Pending; anything else syncs 0 and says why;
- a one_off without a segment has nothing to sync (its list is uploaded);
- an automated campaign without a segment, or an organization without a CDP integration, is
  a misconfiguration: the campaign is reported as such and the other campaigns still sync.

Every profile the CDP sends is accounted for: a recipient in the state the rules of
:mod:`mail_pipeline.domain.sync` decide (with a reason for every state that is not mailed),
after :func:`~mail_pipeline.domain.profiles.judge_profile` checked its fields against the
columns and its address against the country's rules, the printer route and the printer's
limits - a profile that cannot be mailed is an ``Error`` with the reason, and the others are
written; a recipient in ``Error`` for a malformed profile that has an id; or a named rejection
in the result for one that has not. Re-running a sync creates nothing new, but decides again
the recipients it rejected before (Error, no ``error_from_status``): data the brand fixed in
its CDP moves them on, still-bad data refreshes their reason.

Failures stay with their campaign: a CDP page that cannot be read, a write the database
refuses, or any unexpected exception fails that campaign with a reason (logged, the
unexpected ones with their traceback), and the organization's other campaigns still sync.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mail_pipeline.db.campaigns import (
    PROFILE_COLUMNS,
    CampaignForSync,
    CampaignGateway,
    IntegrationRef,
    SyncError,
)
from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.locks import CampaignLocks, LockLost
from mail_pipeline.db.models import utcnow
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.campaigns import CampaignMode, is_sync_candidate
from mail_pipeline.domain.profiles import Destination, judge_profile
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.domain.sync import Decision, ProfileFacts, SyncDecider
from mail_pipeline.failpoints import failpoint
from mail_pipeline.integrations.errors import IntegrationError
from mail_pipeline.integrations.klaviyo.models import ProfilePage

log = logging.getLogger(__name__)
S = RecipientStatus


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
    #: Recipients rejected at an earlier sync and decided again, by their new state.
    redecided: Counter[str] = field(default_factory=Counter)
    #: Profiles without a usable id, which could not become a recipient: one sentence
    #: each, naming the problem and never a value (the lines are logged).
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
    #: Whether a campaign lock's holder has ended without releasing it (its run died): such
    #: a lock is taken over at once instead of blocking the campaign until ``lock_ttl``.
    holder_gone: Callable[[str], bool] | None = None


def sync_candidates(sessions: SessionFactory) -> dict[int, list[int]]:
    """Campaign ids to sync, by active organization (seed 001 §1's candidacy, in id order)."""
    with sessions() as session:
        return CampaignGateway(session).sync_candidates()


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
    """Sync one campaign. Whatever goes wrong while it syncs fails this campaign only (with
    a reason in ``detail``); nothing of it is written then."""
    with sessions() as session:
        campaign = CampaignGateway(session).campaign_for_sync(campaign_id)
    if campaign is None:
        return CampaignSyncResult(campaign_id, "?", Outcome.FAILED, "no such campaign")
    result = CampaignSyncResult(campaign.id, campaign.name, Outcome.SYNCED)
    try:
        _sync(sessions, cdp, campaign, settings, organization_id, result)
    except Exception as exc:
        log.exception("campaign %s (%s): the sync failed unexpectedly", campaign.id, campaign.name)
        _fail(result, f"the sync failed unexpectedly: {_first_line(exc)}")
    return result


def _sync(
    sessions: SessionFactory,
    cdp: CdpDirectory,
    campaign: CampaignForSync,
    settings: SyncSettings,
    organization_id: int | None,
    result: CampaignSyncResult,
) -> None:
    refusal = _refusal(campaign, organization_id)
    if refusal is not None:
        result.outcome, result.detail = refusal
        log.info("campaign %s (%s): %s", campaign.id, campaign.name, result.detail)
        return
    assert campaign.segment_id is not None and campaign.cdp is not None

    with sessions() as session:
        lease = CampaignLocks(session).acquire(
            campaign.id,
            settings.holder,
            settings.lock_ttl,
            now=settings.clock(),
            holder_gone=settings.holder_gone,
        )
    if lease is None:
        result.outcome = Outcome.LOCKED
        result.detail = (
            f"another sync of this campaign ({_holder_of(sessions, campaign.id)}) holds its "
            "lock; it will be synced there"
        )
        log.info("campaign %s (%s): %s", campaign.id, campaign.name, result.detail)
        return
    failpoint("sync.locked")
    try:
        try:
            pages = list(cdp.segment_pages(campaign.cdp, campaign.segment_id))
        except IntegrationError as exc:
            result.outcome, result.detail = Outcome.FAILED, f"reading the segment failed: {exc}"
            return
        with sessions() as session:
            locks = CampaignLocks(session)
            locks.one_writer_per_organization(campaign.organization_id)
            locks.verify(lease, now=settings.clock())
            _write_recipients(session, campaign, pages, result, settings.clock())
        failpoint("sync.written")
    except LockLost as exc:
        _fail(result, str(exc))
    except SQLAlchemyError as exc:
        # Rolled back: nothing of this campaign was written; the next campaign still syncs.
        # The engine hides bound values; only the first line of the driver's message is kept.
        log.error("campaign %s: writing recipients failed: %s", campaign.id, _first_line(exc))
        _fail(result, f"writing recipients failed: {_first_line(exc)}")
    finally:
        with sessions() as session:
            CampaignLocks(session).release(lease)


def _holder_of(sessions: SessionFactory, campaign_id: int) -> str:
    """Who holds the campaign's sync lock (``run:<id>`` for a sync run), to name in a
    refusal."""
    with sessions() as session:
        holder = CampaignLocks(session).holder(campaign_id)
    return holder or "a sync that has just ended"


def _fail(result: CampaignSyncResult, detail: str) -> None:
    result.outcome, result.detail = Outcome.FAILED, detail
    result.created.clear()
    result.redecided.clear()


def _first_line(exc: BaseException) -> str:
    """The exception's kind and the first line of its message (a database error's further
    lines quote SQL and data), at most 300 characters."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    text = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    return text[:300]


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
    session: Session,
    campaign: CampaignForSync,
    pages: list[ProfilePage],
    result: CampaignSyncResult,
    now: datetime,
) -> None:
    gateway = CampaignGateway(session)
    blocked_emails, blocked_addresses = gateway.blocklist(campaign.organization_id)
    rules = campaign.rules
    mailed_since, ordered_since = rules.mailed_since(now), rules.ordered_since(now)
    other_emails, other_addresses = gateway.people_in_other_campaigns(
        campaign.organization_id, campaign.id, mailed_ones=mailed_since is None
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
        rules=rules,
        recently_mailed=(
            {}
            if mailed_since is None
            else gateway.recently_mailed(campaign.organization_id, mailed_since)
        ),
        recent_buyers=(
            {}
            if ordered_since is None
            else gateway.recent_buyers(campaign.organization_id, ordered_since)
        ),
    )
    reopened = gateway.sync_errors(campaign.id)
    decider.know_existing(gateway.existing_facts(campaign.id), reopened=reopened.keys())
    destination = destination_of(campaign)
    rows: list[dict[str, Any]] = []
    redecided: list[tuple[SyncError, Decision, Mapping[str, Any]]] = []

    def record(profile_id: str, decision: Decision, values: Mapping[str, Any]) -> None:
        earlier = reopened.get(profile_id)
        if earlier is not None:
            redecided.append((earlier, decision, values))
        else:
            rows.append(recipient_row(campaign, profile_id, decision, values, now))

    for page in pages:
        for rejected in page.rejected:
            result.profiles_seen += 1
            if not rejected.profile_id:
                result.rejected.append(str(rejected))
            elif decider.claim(ProfileFacts(rejected.profile_id, None, None, False)):
                record(rejected.profile_id, Decision(S.ERROR, str(rejected)), NO_VALUES)
        for profile in page.profiles:
            result.profiles_seen += 1
            judged = judge_profile(profile.to_data(), destination)
            facts = ProfileFacts(
                profile.profile_id,
                judged.email_key,
                judged.address_key,
                judged.has_address,
                judged.problem,
                region=judged.values.get("region"),
                postal_code=judged.values.get("postal_code"),
            )
            decision = decider.decide(facts)
            if decision is not None:
                record(profile.profile_id, decision, judged.values)
    gateway.add_recipients(rows)
    result.created.update(str(row["status"]) for row in rows)
    _apply(session, gateway, redecided, result, now)
    gateway.mark_synced([campaign.id], now)


def _apply(
    session: Session,
    gateway: CampaignGateway,
    redecided: list[tuple[SyncError, Decision, Mapping[str, Any]]],
    result: CampaignSyncResult,
    now: datetime,
) -> None:
    """Write the new decisions for recipients rejected at an earlier sync: still Error ->
    the fresh data and reason (nothing is written when neither changed); anything else ->
    the guarded transition out of Error, with the fresh data."""
    recipients = RecipientGateway(session)
    for earlier, decision, values in redecided:
        fresh = {**values, "status_reason": decision.reason}
        if decision.status is S.ERROR:
            unchanged = dict(values) == earlier.values and decision.reason == earlier.status_reason
            if not unchanged and gateway.refresh_sync_error(earlier.recipient_id, fresh, now):
                result.redecided[str(S.ERROR)] += 1
        elif recipients.transition(
            earlier.recipient_id,
            S.ERROR,
            decision.status,
            now=now,
            values={**fresh, "error_from_status": None},
        ):
            result.redecided[str(decision.status)] += 1
    if result.redecided:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(result.redecided.items()))
        result.detail = f"recipients rejected at an earlier sync, decided again: {counts}"


def destination_of(campaign: CampaignForSync) -> Destination:
    """What the organization adds to judge its profiles' addresses."""
    return Destination(
        home_country=campaign.home_country, printer_preference=campaign.printer_preference
    )


#: The recipient columns of a profile the sync knows nothing of (a malformed one).
NO_VALUES: Mapping[str, Any] = {
    **dict.fromkeys(PROFILE_COLUMNS),
    "properties": {},
}


def recipient_row(
    campaign: CampaignForSync,
    profile_id: str,
    decision: Decision,
    values: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The new recipient of ``profile_id``: its values from
    :func:`~mail_pipeline.domain.profiles.judge_profile`, in the decided state."""
    return {
        "organization_id": campaign.organization_id,
        "campaign_id": campaign.id,
        "external_profile_id": profile_id,
        "source": "cdp",
        "status": decision.status,
        "status_reason": decision.reason,
        "status_changed_at": now,
        "created_at": now,
        "updated_at": now,
        **values,
    }
