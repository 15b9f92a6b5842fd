"""Campaign lifecycle and organization management as use cases (rules: ``domain.lifecycle``).

Each use case reads what is due, applies it with guarded writes in one transaction and
returns a :class:`LifecycleReport`: what changed, and what is due but waits (with the
reason), for the run's metadata. Running one again changes nothing more: a campaign that
was started, completed or downgraded no longer matches its rule.

The nightly steps (:func:`run_nightly_step`) are done once per New York night: the step's
work and its ``nightly_step_runs`` row are one transaction, so whichever run gets to a
night's step first does it and every other run (a catch-up, a manual launch, a second
daemon by mistake) finds it done and skips it, unless launched with ``force`` (each step is
idempotent anyway: forcing only re-applies the rules).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.lifecycle import LifecycleGateway
from mail_pipeline.domain.campaigns import CampaignStatus, OrganizationStatus
from mail_pipeline.domain.lifecycle import (
    REMAINING_STATES,
    CampaignFacts,
    NightlyStep,
    cadence_verdict,
    completion_verdict,
    disable_verdict,
    downgrade_verdict,
    start_verdict,
    switch_off_verdict,
    switched_off_reason,
)
from mail_pipeline.domain.recipients import RecipientStatus

#: How many lines of changes a report shows (the counts cover all).
REPORT_LINES = 50
MAILED = (RecipientStatus.SENT, RecipientStatus.RECEIVED)


@dataclass(frozen=True)
class Scope:
    """What an on-demand run is limited to (empty: everything)."""

    organization_ids: tuple[int, ...] = ()
    campaign_ids: tuple[int, ...] = ()

    @property
    def organizations(self) -> Collection[int] | None:
        return self.organization_ids or None

    @property
    def campaigns(self) -> Collection[int] | None:
        return self.campaign_ids or None


EVERYTHING = Scope()


@dataclass(frozen=True)
class Change:
    """One campaign or organization the rule changed (or left waiting), and why."""

    kind: str
    id: int
    name: str
    what: str
    reason: str
    recipients_skipped: int = 0


@dataclass
class LifecycleReport:
    what: str
    changed: list[Change] = field(default_factory=list)
    #: Due by the calendar but held back (e.g. a start date with no sync yet): a person
    #: may need to act.
    waiting: list[Change] = field(default_factory=list)
    #: A nightly step found already done for its night (by another run).
    already_done: bool = False

    @property
    def recipients_skipped(self) -> int:
        return sum(c.recipients_skipped for c in self.changed)

    def markdown(self) -> str:
        if self.already_done:
            return f"{self.what}: already done for this night by another run."
        if not (self.changed or self.waiting):
            return f"{self.what}: nothing due."
        lines = ["| | id | name | change | why |", "|---|---|---|---|---|"]
        shown = [*self.changed, *self.waiting][:REPORT_LINES]
        lines += [f"| {c.kind} | {c.id} | {c.name} | {c.what} | {c.reason} |" for c in shown]
        hidden = len(self.changed) + len(self.waiting) - len(shown)
        if hidden:
            lines.append(f"\n... and {hidden} more")
        return "\n".join(lines)

    def summary(self) -> dict[str, object]:
        return {
            "changed": len(self.changed),
            "waiting": len(self.waiting),
            "recipients_skipped": self.recipients_skipped,
            "lines": [f"{c.kind} {c.id}: {c.what} ({c.reason})" for c in self.changed][
                :REPORT_LINES
            ],
        }


def _campaign_change(c: CampaignFacts, what: str, reason: str, skipped: int = 0) -> Change:
    return Change("campaign", c.id, c.name, what, reason, skipped)


# --- hourly ---------------------------------------------------------------------------------


def start_campaigns(
    sessions: SessionFactory, today: date, now: datetime, scope: Scope = EVERYTHING
) -> LifecycleReport:
    """Pending campaigns whose start date has come become Active."""
    report = LifecycleReport("start")
    with sessions() as session:
        gateway = LifecycleGateway(session)
        pending = gateway.campaigns(
            [CampaignStatus.PENDING],
            campaign_ids=scope.campaigns,
            organization_ids=scope.organizations,
        )
        tallies = gateway.tallies(c.id for c in pending)
        for campaign in pending:
            recipients = sum((tallies.get(campaign.id) or Counter()).values())
            verdict = start_verdict(campaign, today, recipients)
            if verdict.due:
                if gateway.activate(campaign.id, now):
                    report.changed.append(_campaign_change(campaign, "Active", verdict.reason))
            elif campaign.start_date is not None and campaign.start_date <= today:
                report.waiting.append(_campaign_change(campaign, "still Pending", verdict.reason))
    return report


def complete_campaigns(
    sessions: SessionFactory, now: datetime, scope: Scope = EVERYTHING
) -> LifecycleReport:
    """Active campaigns with nothing remaining are completed; completed campaigns that got
    recipients back from a run (unmailed, never to be claimed again) have them Skipped."""
    report = LifecycleReport("completion")
    with sessions() as session:
        gateway = LifecycleGateway(session)
        active = gateway.campaigns(
            [CampaignStatus.ACTIVE],
            campaign_ids=scope.campaigns,
            organization_ids=scope.organizations,
        )
        tallies = gateway.tallies(c.id for c in active)
        for campaign in active:
            tally = tallies.get(campaign.id) or Counter()
            remaining = sum(n for s, n in tally.items() if s in REMAINING_STATES)
            mailed = sum(tally.get(s, 0) for s in MAILED)
            verdict = completion_verdict(campaign, remaining, mailed, sum(tally.values()))
            if verdict.due and gateway.complete(
                campaign.id, [CampaignStatus.ACTIVE], verdict.reason, now
            ):
                report.changed.append(_campaign_change(campaign, "Completed", verdict.reason))
        for campaign_id, name, mail_date in gateway.completed_with_unclaimed():
            if scope.campaigns is not None and campaign_id not in scope.campaigns:
                continue
            skipped = gateway.skip_unclaimed(campaign_id, switched_off_reason(name, mail_date), now)
            report.changed.append(
                Change(
                    "campaign",
                    campaign_id,
                    name,
                    f"{skipped} unmailed recipients Skipped",
                    "the campaign had ended when a run returned them",
                    skipped,
                )
            )
    return report


# --- nightly ----------------------------------------------------------------------------------


#: Campaigns a nightly step may change: not completed.
LIVE = (CampaignStatus.PENDING, CampaignStatus.ACTIVE, CampaignStatus.PAUSED)


def _live_campaigns(gateway: LifecycleGateway, scope: Scope, **filters: Any) -> list[CampaignFacts]:
    return gateway.campaigns(
        LIVE, campaign_ids=scope.campaigns, organization_ids=scope.organizations, **filters
    )


def _downgrade(
    gateway: LifecycleGateway, night: date, now: datetime, scope: Scope
) -> LifecycleReport:
    report = LifecycleReport(NightlyStep.POSTAGE_DOWNGRADES.value)
    for campaign in _live_campaigns(gateway, scope):
        verdict = downgrade_verdict(campaign, night)
        if verdict.due and gateway.downgrade_postage(campaign.id, now):
            report.changed.append(_campaign_change(campaign, "standard postage", verdict.reason))
    return report


def _cadence(
    gateway: LifecycleGateway, night: date, now: datetime, scope: Scope
) -> LifecycleReport:
    report = LifecycleReport(NightlyStep.CSM_CADENCE.value)
    for organization in gateway.organizations([OrganizationStatus.ACTIVE], ids=scope.organizations):
        verdict = cadence_verdict(organization, now)
        if verdict.due and gateway.set_biweekly(organization.id, now):
            report.changed.append(
                Change(
                    "organization", organization.id, organization.name, "biweekly", verdict.reason
                )
            )
    return report


def _switch_off(
    gateway: LifecycleGateway, night: date, now: datetime, scope: Scope
) -> LifecycleReport:
    report = LifecycleReport(NightlyStep.SWITCHOFFS.value)
    for campaign in _live_campaigns(gateway, scope, organization_statuses=list(OrganizationStatus)):
        verdict = switch_off_verdict(campaign, night)
        if not verdict.due:
            continue
        if gateway.complete(campaign.id, [campaign.status], verdict.reason, now):
            skipped = gateway.skip_unclaimed(
                campaign.id, switched_off_reason(campaign.name, campaign.mail_date), now
            )
            report.changed.append(_campaign_change(campaign, "Completed", verdict.reason, skipped))
    return report


NIGHTLY_WORK = {
    NightlyStep.POSTAGE_DOWNGRADES: _downgrade,
    NightlyStep.CSM_CADENCE: _cadence,
    NightlyStep.SWITCHOFFS: _switch_off,
}


def run_nightly_step(
    sessions: SessionFactory,
    step: NightlyStep,
    night: date,
    now: datetime,
    *,
    run_id: str | None = None,
    scope: Scope = EVERYTHING,
    force: bool = False,
) -> LifecycleReport:
    """Do ``step`` for ``night`` unless it is done (see the module); one transaction. A
    scoped run (one organization or campaign) is not recorded as the night's step: the
    night's own run still does everyone."""
    with sessions() as session:
        gateway = LifecycleGateway(session)
        recorded = scope == EVERYTHING
        if recorded and not gateway.begin_step(night, step.value, run_id, now) and not force:
            return LifecycleReport(step.value, already_done=True)
        report = NIGHTLY_WORK[step](gateway, night, now, scope)
        if recorded:
            gateway.finish_step(night, step.value, report.summary())
    return report


# --- organizations ----------------------------------------------------------------------------


def disable_churned_organizations(
    sessions: SessionFactory, now: datetime, scope: Scope = EVERYTHING
) -> LifecycleReport:
    """Organizations churned long enough ago become disabled; their automated campaigns
    pause. Nothing of a disabled organization is synced or claimed."""
    report = LifecycleReport("organization statuses")
    with sessions() as session:
        gateway = LifecycleGateway(session)
        for organization in gateway.organizations(
            [OrganizationStatus.CHURNED], ids=scope.organizations
        ):
            verdict = disable_verdict(organization, now)
            if not verdict.due:
                continue
            if gateway.disable(organization.id, now):
                paused = gateway.pause_automated(organization.id, now)
                what = "disabled" + (f"; campaigns {paused} paused" if paused else "")
                report.changed.append(
                    Change("organization", organization.id, organization.name, what, verdict.reason)
                )
    return report
