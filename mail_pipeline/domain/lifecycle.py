"""Campaign lifecycle and organization management: when things become due (seed 000's
``automator.process_campaign_completions``, ``process_postage_downgrades``,
``process_csm_cadence_updates``, ``process_scheduled_campaigns_switchoffs`` and
``organization_status_sync``; the time windows of seed 002).

Every rule takes "today" or "now" as an argument (the New York day of the schedule's tick,
not the clock), so a run that catches up a missed night decides as that night would have.
The rules, written once here and in docs/lifecycle.md:

- **Start** (hourly): a Pending campaign with a start date becomes Active on that New York
  day. A one-off campaign waits for its list: one with a segment until it has been synced
  once (it syncs only while Pending: activating it first would mail nobody), one without
  (an uploaded list) until it has recipients.
- **Completion** (hourly): an Active campaign is completed when nothing remains to process.
  Remaining means a recipient in a state that will still move towards the printer
  (:data:`REMAINING_STATES`). A one-off campaign is complete once none remains (its list is
  final once it is Active), if it has any recipient at all (an empty one waits for its
  list, or for its mail date). An automated campaign keeps receiving new profiles from its
  segment, so "nothing remaining" is not an end: it completes only once its total send cap
  is reached and none remains. Paused and Pending campaigns are never completed by this
  rule (a person paused it; it has not started).
- **Postage downgrade** (2:00): a first-class campaign with ``postage_downgrade_after_days``
  becomes standard once that many days have passed since it started (its start date, else
  the day it became Active, else the day it was created). Pieces already written for the
  printer keep the postage they were written with.
- **CSM cadence** (3:00): an active organization on the weekly cadence moves to biweekly
  once its first postcard was accepted by a printer at least :data:`CSM_SETTLE_DAYS` ago and
  its cadence has not been changed (by this rule or a person) in that time. It never moves
  back by itself.
- **Switch-off** (3:30): a campaign with a mail date is completed the night after its mail
  date (mail date < today), whatever its status but Completed. Its recipients that were
  never claimed for printing (:data:`UNCLAIMED_STATES`) are Skipped with the reason; those
  a run holds finish their stage first and are skipped by the next completion sweep if they
  come back unmailed.
- **Disabling** (every 10 minutes): an organization churned at least
  :data:`CHURN_GRACE_DAYS` ago becomes disabled; its automated campaigns that are Pending
  or Active are paused. Only active organizations' recipients are ever claimed or synced.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from mail_pipeline.domain.campaigns import (
    CampaignMode,
    CampaignStatus,
    CsmCadence,
    OrganizationStatus,
    Postage,
)
from mail_pipeline.domain.recipients import RecipientStatus

S = RecipientStatus

#: Recipients that will still move towards the printer: a campaign holding any is not done.
REMAINING_STATES = frozenset(
    {
        S.ADDRESS_ENRICHABLE,
        S.ADDRESS_ENRICHING,
        S.PENDING,
        S.PROOFING_STAGED,
        S.PROOFING,
        S.PROOFED,
        S.SENDING_STAGED,
        S.SENDING,
    }
)
#: Remaining recipients no run holds: at a campaign's end they are Skipped with the reason.
UNCLAIMED_STATES = frozenset({S.ADDRESS_ENRICHABLE, S.PENDING, S.PROOFED})
#: Recipients a run (or an enrichment batch) holds: left to finish their stage.
CLAIMED_STATES = REMAINING_STATES - UNCLAIMED_STATES

#: An organization churned this long ago is disabled.
CHURN_GRACE_DAYS = 180
#: Weekly CSM check-ins last this long after the first postcard (and after any change).
CSM_SETTLE_DAYS = 56


class NightlyStep(StrEnum):
    """The nightly steps, in the order they run each night (seed 000's times, New York)."""

    POSTAGE_DOWNGRADES = "postage_downgrades"
    CSM_CADENCE = "csm_cadence_updates"
    SWITCHOFFS = "scheduled_campaign_switchoffs"

    @property
    def due_at(self) -> time:
        return NIGHTLY_TIMES[self]

    @property
    def order(self) -> int:
        return list(NightlyStep).index(self)


NIGHTLY_TIMES = {
    NightlyStep.POSTAGE_DOWNGRADES: time(2, 0),
    NightlyStep.CSM_CADENCE: time(3, 0),
    NightlyStep.SWITCHOFFS: time(3, 30),
}


def steps_through(last: NightlyStep) -> list[NightlyStep]:
    """The night's steps up to and including ``last``, in order: a run for ``last`` does
    any earlier step that has not been done that night first."""
    return [step for step in NightlyStep if step.order <= last.order]


@dataclass(frozen=True)
class CampaignFacts:
    """What the lifecycle rules read of a campaign."""

    id: int
    name: str
    mode: CampaignMode
    status: CampaignStatus
    has_segment: bool
    start_date: date | None
    mail_date: date | None
    created_on: date
    activated_on: date | None = None
    last_synced_at: datetime | None = None
    postage: Postage = Postage.FIRST_CLASS
    postage_downgrade_after_days: int | None = None
    total_send_cap: int | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether a rule applies now and, either way, why (shown in the run's report)."""

    due: bool
    reason: str


def start_verdict(campaign: CampaignFacts, today: date, recipients: int) -> Verdict:
    """Whether a Pending campaign with ``recipients`` becomes Active ``today`` (the
    module's start rule)."""
    if campaign.status != CampaignStatus.PENDING:
        return Verdict(False, f"the campaign is {campaign.status}, not Pending")
    if campaign.start_date is None:
        return Verdict(False, "no start date: a person activates it")
    if campaign.start_date > today:
        return Verdict(False, f"starts on {campaign.start_date}")
    if (
        campaign.mode == CampaignMode.ONE_OFF
        and campaign.has_segment
        and campaign.last_synced_at is None
    ):
        return Verdict(
            False,
            f"start date {campaign.start_date} has come, but its segment has not been synced "
            "yet: it starts after the first sync",
        )
    if campaign.mode == CampaignMode.ONE_OFF and not campaign.has_segment and not recipients:
        return Verdict(
            False,
            f"start date {campaign.start_date} has come, but no recipient list has been "
            "committed yet: it starts once one is",
        )
    return Verdict(True, f"start date {campaign.start_date}")


def completion_verdict(
    campaign: CampaignFacts, remaining: int, mailed: int, recipients: int
) -> Verdict:
    """Whether an Active campaign is complete: ``remaining`` recipients in
    :data:`REMAINING_STATES`, ``mailed`` recipients Sent or Received, ``recipients`` in
    all."""
    if campaign.status != CampaignStatus.ACTIVE:
        return Verdict(False, f"the campaign is {campaign.status}, not Active")
    if remaining:
        return Verdict(False, f"{remaining} recipients still to process")
    if campaign.mode == CampaignMode.ONE_OFF:
        if not recipients:
            return Verdict(False, "no recipients yet")
        return Verdict(True, f"every recipient processed ({mailed} mailed)")
    cap = campaign.total_send_cap
    if cap is not None and mailed >= cap:
        return Verdict(True, f"total send cap of {cap} reached and nothing left to process")
    return Verdict(False, "automated: new profiles keep entering its segment")


def campaign_started_on(campaign: CampaignFacts) -> date:
    return campaign.start_date or campaign.activated_on or campaign.created_on


def downgrade_verdict(campaign: CampaignFacts, today: date) -> Verdict:
    """Whether a campaign's postage becomes standard ``today``."""
    days = campaign.postage_downgrade_after_days
    if campaign.postage != Postage.FIRST_CLASS:
        return Verdict(False, f"postage is {campaign.postage}")
    if days is None:
        return Verdict(False, "no downgrade configured")
    if campaign.status == CampaignStatus.COMPLETED:
        return Verdict(False, "the campaign is completed")
    due_on = campaign_started_on(campaign) + timedelta(days=days)
    if due_on > today:
        return Verdict(False, f"first class until {due_on}")
    return Verdict(True, f"{days} days since it started on {campaign_started_on(campaign)}")


def switch_off_verdict(campaign: CampaignFacts, today: date) -> Verdict:
    """Whether a campaign with a mail date is completed ``today`` (the night after it)."""
    if campaign.status == CampaignStatus.COMPLETED:
        return Verdict(False, "already completed")
    if campaign.mail_date is None:
        return Verdict(False, "no mail date")
    if campaign.mail_date >= today:
        return Verdict(False, f"mails until {campaign.mail_date}")
    return Verdict(True, f"mail date {campaign.mail_date} has passed")


def switched_off_reason(campaign_name: str, mail_date: date | None) -> str:
    """Why a recipient never claimed for printing is Skipped at its campaign's end."""
    when = f"its mail date {mail_date} passed" if mail_date else "it was completed"
    return f"campaign {campaign_name!r} ended before this recipient was mailed ({when})"


@dataclass(frozen=True)
class OrganizationFacts:
    id: int
    name: str
    status: OrganizationStatus
    churned_at: datetime | None = None
    csm_cadence: CsmCadence = CsmCadence.WEEKLY
    csm_cadence_changed_at: datetime | None = None
    first_mailed_at: datetime | None = None


def disable_verdict(organization: OrganizationFacts, now: datetime) -> Verdict:
    """Whether a churned organization is disabled at ``now``."""
    if organization.status != OrganizationStatus.CHURNED:
        return Verdict(False, f"the organization is {organization.status}")
    if organization.churned_at is None:
        return Verdict(False, "churned, with no churn date: disable it by hand")
    disable_at = organization.churned_at + timedelta(days=CHURN_GRACE_DAYS)
    if disable_at > now:
        return Verdict(False, f"churned; disabled from {disable_at:%Y-%m-%d}")
    return Verdict(
        True, f"churned on {organization.churned_at:%Y-%m-%d}, {CHURN_GRACE_DAYS} days ago or more"
    )


def cadence_verdict(organization: OrganizationFacts, now: datetime) -> Verdict:
    """Whether an organization's CSM cadence moves from weekly to biweekly at ``now``."""
    if organization.status != OrganizationStatus.ACTIVE:
        return Verdict(False, f"the organization is {organization.status}")
    if organization.csm_cadence != CsmCadence.WEEKLY:
        return Verdict(False, f"already {organization.csm_cadence}")
    if organization.first_mailed_at is None:
        return Verdict(False, "no postcard mailed yet")
    settle = timedelta(days=CSM_SETTLE_DAYS)
    if organization.first_mailed_at + settle > now:
        return Verdict(
            False,
            f"first postcard on {organization.first_mailed_at:%Y-%m-%d}: weekly for "
            f"{CSM_SETTLE_DAYS} days",
        )
    changed = organization.csm_cadence_changed_at
    if changed is not None and changed + settle > now:
        return Verdict(False, f"cadence set on {changed:%Y-%m-%d}: kept for {CSM_SETTLE_DAYS} days")
    return Verdict(True, f"{CSM_SETTLE_DAYS} days since the first postcard")
