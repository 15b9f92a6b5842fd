"""The lifecycle's rules (``domain.lifecycle``): when a campaign starts, completes, is
downgraded or switched off, when an organization is disabled or its CSM cadence moves."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from mail_pipeline.domain.campaigns import (
    CampaignMode,
    CampaignStatus,
    CsmCadence,
    OrganizationStatus,
    Postage,
)
from mail_pipeline.domain.lifecycle import (
    CHURN_GRACE_DAYS,
    CSM_SETTLE_DAYS,
    CampaignFacts,
    NightlyStep,
    OrganizationFacts,
    cadence_verdict,
    completion_verdict,
    disable_verdict,
    downgrade_verdict,
    start_verdict,
    steps_through,
    switch_off_verdict,
)
from mail_pipeline.domain.recipients import TRANSITIONS, RecipientStatus

TODAY = date(2026, 11, 30)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ONE_OFF = CampaignFacts(
    id=1,
    name="Holiday drop",
    mode=CampaignMode.ONE_OFF,
    status=CampaignStatus.PENDING,
    has_segment=True,
    start_date=TODAY,
    mail_date=None,
    created_on=date(2026, 11, 1),
    last_synced_at=NOW - timedelta(hours=2),
)
AUTOMATED = replace(ONE_OFF, mode=CampaignMode.AUTOMATED, status=CampaignStatus.ACTIVE)


@pytest.mark.parametrize(
    ("campaign", "due", "reason"),
    [
        (ONE_OFF, True, "start date 2026-11-30"),
        (replace(ONE_OFF, start_date=TODAY - timedelta(days=3)), True, "start date"),
        (replace(ONE_OFF, start_date=TODAY + timedelta(days=1)), False, "starts on 2026-12-01"),
        (replace(ONE_OFF, start_date=None), False, "no start date"),
        (replace(ONE_OFF, status=CampaignStatus.PAUSED), False, "is Paused"),
        (replace(ONE_OFF, last_synced_at=None), False, "has not been synced yet"),
        # an uploaded list (no segment) waits for its recipients
        (replace(ONE_OFF, last_synced_at=None, has_segment=False), False, "no recipient list"),
        # an automated campaign keeps syncing while Active
        (replace(ONE_OFF, mode=CampaignMode.AUTOMATED, last_synced_at=None), True, "start date"),
    ],
)
def test_a_pending_campaign_starts_on_its_start_date(
    campaign: CampaignFacts, due: bool, reason: str
) -> None:
    verdict = start_verdict(campaign, TODAY, 0)
    assert verdict.due is due
    assert reason in verdict.reason


def test_an_uploaded_list_starts_once_it_has_recipients() -> None:
    uploaded = replace(ONE_OFF, has_segment=False, last_synced_at=None)
    assert start_verdict(uploaded, TODAY, 1).due
    everyone_errored = replace(uploaded, status=CampaignStatus.ACTIVE)
    assert completion_verdict(everyone_errored, 0, 0, 3).due


@pytest.mark.parametrize(
    ("campaign", "remaining", "mailed", "due", "reason"),
    [
        (replace(ONE_OFF, status=CampaignStatus.ACTIVE), 0, 40, True, "40 mailed"),
        (replace(ONE_OFF, status=CampaignStatus.ACTIVE), 0, 0, False, "no recipients yet"),
        (replace(ONE_OFF, status=CampaignStatus.ACTIVE), 3, 40, False, "3 recipients still"),
        (AUTOMATED, 0, 40, False, "new profiles keep entering"),
        (replace(AUTOMATED, total_send_cap=40), 0, 40, True, "total send cap of 40"),
        (replace(AUTOMATED, total_send_cap=40), 1, 40, False, "1 recipients still"),
        (replace(AUTOMATED, total_send_cap=50), 0, 40, False, "new profiles"),
        (replace(ONE_OFF, status=CampaignStatus.PAUSED), 0, 40, False, "is Paused"),
        (ONE_OFF, 0, 0, False, "is Pending"),
    ],
)
def test_completion_depends_on_the_mode(
    campaign: CampaignFacts, remaining: int, mailed: int, due: bool, reason: str
) -> None:
    verdict = completion_verdict(campaign, remaining, mailed, remaining + mailed)
    assert verdict.due is due
    assert reason in verdict.reason


DOWNGRADING = replace(AUTOMATED, start_date=date(2026, 11, 20), postage_downgrade_after_days=10)


@pytest.mark.parametrize(
    ("campaign", "due", "reason"),
    [
        (DOWNGRADING, True, "10 days since it started on 2026-11-20"),
        (replace(DOWNGRADING, postage_downgrade_after_days=11), False, "until 2026-12-01"),
        (replace(DOWNGRADING, postage=Postage.STANDARD), False, "postage is standard"),
        (replace(DOWNGRADING, postage_downgrade_after_days=None), False, "no downgrade"),
        (replace(DOWNGRADING, status=CampaignStatus.COMPLETED), False, "completed"),
        # no start date: from the day it became Active, else from its creation
        (
            replace(DOWNGRADING, start_date=None, activated_on=date(2026, 11, 21)),
            False,
            "until 2026-12-01",
        ),
        (replace(DOWNGRADING, start_date=None, created_on=date(2026, 11, 2)), True, "11-02"),
    ],
)
def test_postage_is_downgraded_after_the_configured_days(
    campaign: CampaignFacts, due: bool, reason: str
) -> None:
    verdict = downgrade_verdict(campaign, TODAY)
    assert verdict.due is due
    assert reason in verdict.reason


@pytest.mark.parametrize(
    ("mail_date", "status", "due"),
    [
        (TODAY - timedelta(days=1), CampaignStatus.ACTIVE, True),
        (TODAY - timedelta(days=30), CampaignStatus.PAUSED, True),
        (TODAY - timedelta(days=1), CampaignStatus.PENDING, True),
        (TODAY, CampaignStatus.ACTIVE, False),  # mails all of its mail date
        (None, CampaignStatus.ACTIVE, False),
        (TODAY - timedelta(days=1), CampaignStatus.COMPLETED, False),
    ],
)
def test_a_campaign_switches_off_the_night_after_its_mail_date(
    mail_date: date | None, status: CampaignStatus, due: bool
) -> None:
    campaign = replace(ONE_OFF, mail_date=mail_date, status=status)
    assert switch_off_verdict(campaign, TODAY).due is due


CHURNED = OrganizationFacts(
    id=7,
    name="Gone Brand",
    status=OrganizationStatus.CHURNED,
    churned_at=NOW - timedelta(days=CHURN_GRACE_DAYS),
)


@pytest.mark.parametrize(
    ("organization", "due"),
    [
        (CHURNED, True),
        (replace(CHURNED, churned_at=NOW - timedelta(days=CHURN_GRACE_DAYS, seconds=-1)), False),
        (replace(CHURNED, churned_at=None), False),
        (replace(CHURNED, status=OrganizationStatus.ACTIVE), False),
        (replace(CHURNED, status=OrganizationStatus.DISABLED), False),
    ],
)
def test_an_organization_is_disabled_180_days_after_it_churned(
    organization: OrganizationFacts, due: bool
) -> None:
    assert disable_verdict(organization, NOW).due is due


SETTLED = OrganizationFacts(
    id=8,
    name="Steady Brand",
    status=OrganizationStatus.ACTIVE,
    first_mailed_at=NOW - timedelta(days=CSM_SETTLE_DAYS),
)


@pytest.mark.parametrize(
    ("organization", "due", "reason"),
    [
        (SETTLED, True, "days since the first postcard"),
        (replace(SETTLED, first_mailed_at=NOW - timedelta(days=10)), False, "weekly for"),
        (replace(SETTLED, first_mailed_at=None), False, "no postcard mailed"),
        (replace(SETTLED, csm_cadence=CsmCadence.BIWEEKLY), False, "already biweekly"),
        # a person set weekly again a week ago: kept for the settle period
        (
            replace(SETTLED, csm_cadence_changed_at=NOW - timedelta(days=7)),
            False,
            "kept for",
        ),
        (replace(SETTLED, status=OrganizationStatus.CHURNED), False, "is churned"),
    ],
)
def test_the_csm_cadence_moves_to_biweekly_once_settled(
    organization: OrganizationFacts, due: bool, reason: str
) -> None:
    verdict = cadence_verdict(organization, NOW)
    assert verdict.due is due
    assert reason in verdict.reason


def test_a_nightly_run_does_the_steps_in_the_seed_order_through_its_own() -> None:
    assert steps_through(NightlyStep.POSTAGE_DOWNGRADES) == [NightlyStep.POSTAGE_DOWNGRADES]
    assert steps_through(NightlyStep.SWITCHOFFS) == [
        NightlyStep.POSTAGE_DOWNGRADES,
        NightlyStep.CSM_CADENCE,
        NightlyStep.SWITCHOFFS,
    ]
    assert [step.due_at.isoformat() for step in NightlyStep] == ["02:00:00", "03:00:00", "03:30:00"]


def test_a_campaign_end_may_skip_what_was_never_claimed() -> None:
    for status in (RecipientStatus.PENDING, RecipientStatus.PROOFED):
        assert RecipientStatus.SKIPPED in TRANSITIONS[status]
    assert RecipientStatus.SKIPPED in TRANSITIONS[RecipientStatus.ADDRESS_ENRICHABLE]
    # a claimed recipient finishes its stage first
    for claimed in (RecipientStatus.PROOFING_STAGED, RecipientStatus.SENDING_STAGED):
        assert RecipientStatus.SKIPPED not in TRANSITIONS[claimed]
