"""The lifecycle's use cases on a real database (SQLite, or PostgreSQL when
MAIL_PIPELINE_TEST_DATABASE_URL is set): each changes what its rule says, reports it, and
changes nothing when run again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial

import sqlalchemy as sa

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.mailpieces import MailpieceLedger
from mail_pipeline.db.models import (
    Campaign,
    Mailpiece,
    NightlyStepRun,
    Organization,
    Recipient,
)
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.campaigns import (
    CampaignMode,
    CampaignStatus,
    CsmCadence,
    OrganizationStatus,
    Postage,
)
from mail_pipeline.domain.lifecycle import NightlyStep
from mail_pipeline.domain.recipients import RecipientStatus as S
from mail_pipeline.services.lifecycle import (
    Scope,
    complete_campaigns,
    disable_churned_organizations,
    run_nightly_step,
    start_campaigns,
)

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # 3:00 in New York
TODAY = date(2026, 11, 30)
MakeCampaign = Callable[..., tuple[int, int]]
AddRecipients = Callable[..., list[int]]


def _campaign(db_url: str, campaign_id: int) -> Campaign:
    with unit_of_work(db_url) as session:
        return session.get_one(Campaign, campaign_id)


def _statuses(db_url: str, campaign_id: int) -> dict[S, int]:
    with unit_of_work(db_url) as session:
        rows = session.execute(
            sa.select(Recipient.status, sa.func.count())
            .where(Recipient.campaign_id == campaign_id)
            .group_by(Recipient.status)
        )
        return {S(status): n for status, n in rows}


def test_a_scheduled_one_off_campaign_starts_on_its_date_once_synced(
    db_url: str, make_campaign: MakeCampaign
) -> None:
    sessions = partial(unit_of_work, db_url)
    _, synced = make_campaign(
        mode=CampaignMode.ONE_OFF,
        status=CampaignStatus.PENDING,
        provider_segment_id="seg-1",
        start_date=TODAY,
        last_synced_at=NOW - timedelta(hours=1),
    )
    _, unsynced = make_campaign(
        mode=CampaignMode.ONE_OFF,
        status=CampaignStatus.PENDING,
        provider_segment_id="seg-2",
        start_date=TODAY - timedelta(days=1),
    )
    _, later = make_campaign(
        mode=CampaignMode.ONE_OFF, status=CampaignStatus.PENDING, start_date=TODAY + timedelta(1)
    )

    report = start_campaigns(sessions, TODAY, NOW)

    assert [c.id for c in report.changed] == [synced]
    assert [c.id for c in report.waiting] == [unsynced]
    assert "has not been synced" in report.waiting[0].reason
    started = _campaign(db_url, synced)
    assert started.status == CampaignStatus.ACTIVE and started.activated_at == NOW
    assert _campaign(db_url, unsynced).status == CampaignStatus.PENDING
    assert _campaign(db_url, later).status == CampaignStatus.PENDING
    again = start_campaigns(sessions, TODAY, NOW + timedelta(hours=1))
    assert again.changed == []
    assert _campaign(db_url, synced).activated_at == NOW


def test_a_campaign_of_a_disabled_organization_does_not_start(
    db_url: str, make_campaign: MakeCampaign
) -> None:
    org_id, campaign_id = make_campaign(status=CampaignStatus.PENDING, start_date=TODAY)
    with unit_of_work(db_url) as session:
        session.get_one(Organization, org_id).status = OrganizationStatus.DISABLED

    assert start_campaigns(partial(unit_of_work, db_url), TODAY, NOW).changed == []
    assert _campaign(db_url, campaign_id).status == CampaignStatus.PENDING


def test_completion_waits_for_every_remaining_recipient(
    db_url: str, make_campaign: MakeCampaign, add_recipients: AddRecipients
) -> None:
    sessions = partial(unit_of_work, db_url)
    _, done = make_campaign(mode=CampaignMode.ONE_OFF)
    _, busy = make_campaign(mode=CampaignMode.ONE_OFF)
    _, automated = make_campaign(mode=CampaignMode.AUTOMATED)
    _, capped = make_campaign(mode=CampaignMode.AUTOMATED, total_send_cap=2)
    for campaign_id in (done, busy, automated, capped):
        add_recipients(campaign_id, 2, S.SENT)
    add_recipients(done, 1, S.ERROR, status_reason="printer refused")
    add_recipients(done, 1, S.SKIPPED, status_reason="duplicate")
    add_recipients(busy, 1, S.PROOFED)

    report = complete_campaigns(sessions, NOW)

    assert sorted(c.id for c in report.changed) == sorted([capped, done])
    assert _campaign(db_url, done).status == CampaignStatus.COMPLETED
    assert "every recipient processed (2 mailed)" in (
        _campaign(db_url, done).completed_reason or ""
    )
    assert _campaign(db_url, busy).status == CampaignStatus.ACTIVE
    assert _campaign(db_url, automated).status == CampaignStatus.ACTIVE
    assert complete_campaigns(sessions, NOW).changed == []


def test_a_switched_off_campaign_skips_what_it_never_mailed_and_lets_runs_finish(
    db_url: str, make_campaign: MakeCampaign, add_recipients: AddRecipients
) -> None:
    sessions = partial(unit_of_work, db_url)
    _, campaign_id = make_campaign(mode=CampaignMode.ONE_OFF, mail_date=TODAY - timedelta(days=1))
    _, current = make_campaign(mode=CampaignMode.ONE_OFF, mail_date=TODAY)
    add_recipients(campaign_id, 2, S.PENDING)
    add_recipients(campaign_id, 1, S.PROOFED)
    sending = add_recipients(campaign_id, 1, S.SENDING, batch_id="b-1", claimed_by_run="run-1")
    add_recipients(campaign_id, 3, S.SENT)
    add_recipients(current, 2, S.PENDING)

    report = run_nightly_step(sessions, NightlyStep.SWITCHOFFS, TODAY, NOW, run_id="run-9")

    assert [(c.id, c.recipients_skipped) for c in report.changed] == [(campaign_id, 3)]
    assert _campaign(db_url, campaign_id).status == CampaignStatus.COMPLETED
    assert _statuses(db_url, campaign_id) == {S.SKIPPED: 3, S.SENDING: 1, S.SENT: 3}
    with unit_of_work(db_url) as session:
        reasons = set(
            session.scalars(
                sa.select(Recipient.status_reason).where(
                    Recipient.campaign_id == campaign_id, Recipient.status == S.SKIPPED
                )
            )
        )
    assert reasons == {
        f"campaign 'Campaign 1' ended before this recipient was mailed "
        f"(its mail date {TODAY - timedelta(days=1)} passed)"
    }
    assert _statuses(db_url, current) == {S.PENDING: 2}

    # The mailing run dies; recovery hands its recipient back to Proofed, where no run of a
    # completed campaign will claim it: the next completion sweep skips it with the reason.
    with unit_of_work(db_url) as session:
        gateway = RecipientGateway(session)
        assert gateway.transition_many(sending, S.SENDING, S.SENDING_STAGED)
        assert gateway.transition_many(sending, S.SENDING_STAGED, S.PROOFED)
    swept = complete_campaigns(sessions, NOW + timedelta(hours=1))
    assert [(c.id, c.recipients_skipped) for c in swept.changed] == [(campaign_id, 1)]
    assert _statuses(db_url, campaign_id) == {S.SKIPPED: 4, S.SENT: 3}


def test_a_nightly_step_is_done_once_per_night_whichever_run_gets_there(
    db_url: str, make_campaign: MakeCampaign
) -> None:
    sessions = partial(unit_of_work, db_url)
    _, campaign_id = make_campaign(
        start_date=TODAY - timedelta(days=10), postage_downgrade_after_days=10
    )

    first = run_nightly_step(sessions, NightlyStep.POSTAGE_DOWNGRADES, TODAY, NOW, run_id="run-1")
    second = run_nightly_step(sessions, NightlyStep.POSTAGE_DOWNGRADES, TODAY, NOW, run_id="run-2")

    assert [c.id for c in first.changed] == [campaign_id] and not first.already_done
    assert second.already_done and second.changed == []
    downgraded = _campaign(db_url, campaign_id)
    assert downgraded.postage == Postage.STANDARD and downgraded.postage_downgraded_at == NOW
    with unit_of_work(db_url) as session:
        rows = session.scalars(sa.select(NightlyStepRun)).all()
        assert [(r.night, r.step, r.run_id) for r in rows] == [
            (TODAY, "postage_downgrades", "run-1")
        ]
        assert rows[0].summary["changed"] == 1
    # the next night is a night of its own; forcing re-applies a done step (nothing left)
    assert not run_nightly_step(
        sessions, NightlyStep.POSTAGE_DOWNGRADES, TODAY + timedelta(1), NOW
    ).already_done
    forced = run_nightly_step(sessions, NightlyStep.POSTAGE_DOWNGRADES, TODAY, NOW, force=True)
    assert not forced.already_done and forced.changed == []


def test_a_scoped_nightly_run_does_not_take_the_nights_step(
    db_url: str, make_campaign: MakeCampaign
) -> None:
    sessions = partial(unit_of_work, db_url)
    fields = {"start_date": TODAY - timedelta(days=5), "postage_downgrade_after_days": 5}
    _, one = make_campaign(**fields)
    _, other = make_campaign(**fields)

    scoped = run_nightly_step(
        sessions, NightlyStep.POSTAGE_DOWNGRADES, TODAY, NOW, scope=Scope(campaign_ids=(one,))
    )
    night = run_nightly_step(sessions, NightlyStep.POSTAGE_DOWNGRADES, TODAY, NOW)

    assert [c.id for c in scoped.changed] == [one]
    assert [c.id for c in night.changed] == [other]


def test_a_downgrade_leaves_pieces_already_written_for_the_printer_as_they_were(
    db_url: str, make_campaign: MakeCampaign, add_recipients: AddRecipients
) -> None:
    org_id, campaign_id = make_campaign(
        start_date=TODAY - timedelta(days=3), postage_downgrade_after_days=3
    )
    (rid,) = add_recipients(campaign_id, 1, S.SENDING)
    with unit_of_work(db_url) as session:
        MailpieceLedger(session).request(
            recipient_id=rid,
            organization_id=org_id,
            campaign_id=campaign_id,
            printer="lob",
            postage=Postage.FIRST_CLASS,
        )

    run_nightly_step(partial(unit_of_work, db_url), NightlyStep.POSTAGE_DOWNGRADES, TODAY, NOW)

    assert _campaign(db_url, campaign_id).postage == Postage.STANDARD
    with unit_of_work(db_url) as session:
        assert session.scalar(sa.select(Mailpiece.postage)) == Postage.FIRST_CLASS
        # a resumed attempt asks the printer with the postage it was written with
        current = MailpieceLedger(session).current(rid)
        assert current is not None and current.postage == Postage.FIRST_CLASS


def test_the_csm_cadence_moves_for_organizations_settled_on_weekly(
    db_url: str, make_campaign: MakeCampaign, add_recipients: AddRecipients
) -> None:
    settled_org, settled = make_campaign()
    new_org, new = make_campaign()
    for org_id, campaign_id, accepted in (
        (settled_org, settled, NOW - timedelta(days=60)),
        (new_org, new, NOW - timedelta(days=20)),
    ):
        (rid,) = add_recipients(campaign_id, 1, S.SENT)
        with unit_of_work(db_url) as session:
            session.add(
                Mailpiece(
                    recipient_id=rid,
                    organization_id=org_id,
                    campaign_id=campaign_id,
                    printer="lob",
                    idempotency_key=f"key-{rid}",
                    postage=Postage.FIRST_CLASS,
                    accepted_at=accepted,
                )
            )

    report = run_nightly_step(partial(unit_of_work, db_url), NightlyStep.CSM_CADENCE, TODAY, NOW)

    assert [c.id for c in report.changed] == [settled_org]
    with unit_of_work(db_url) as session:
        cadences = {
            r.id: r.csm_cadence
            for r in session.execute(sa.select(Organization.id, Organization.csm_cadence))
        }
        changed_at = session.get_one(Organization, settled_org).csm_cadence_changed_at
    assert cadences == {settled_org: CsmCadence.BIWEEKLY, new_org: CsmCadence.WEEKLY}
    assert changed_at == NOW


def test_an_organization_churned_180_days_ago_is_disabled_and_its_automations_pause(
    db_url: str, make_campaign: MakeCampaign, add_recipients: AddRecipients
) -> None:
    sessions = partial(unit_of_work, db_url)
    org_id, automated = make_campaign(mode=CampaignMode.AUTOMATED)
    with unit_of_work(db_url) as session:
        one_off = Campaign(
            organization_id=org_id,
            name="Last drop",
            campaign_mode=CampaignMode.ONE_OFF,
            status=CampaignStatus.ACTIVE,
        )
        session.add(one_off)
        session.flush()
        one_off_id = one_off.id
        org = session.get_one(Organization, org_id)
        org.status = OrganizationStatus.CHURNED
        org.churned_at = NOW - timedelta(days=181)
    recent_org, _ = make_campaign()
    with unit_of_work(db_url) as session:
        org = session.get_one(Organization, recent_org)
        org.status, org.churned_at = OrganizationStatus.CHURNED, NOW - timedelta(days=30)
    add_recipients(automated, 2, S.PROOFED)

    report = disable_churned_organizations(sessions, NOW)

    assert [c.id for c in report.changed] == [org_id]
    assert f"campaigns [{automated}] paused" in report.changed[0].what
    with unit_of_work(db_url) as session:
        disabled = session.get_one(Organization, org_id)
        assert (disabled.status, disabled.disabled_at) == (OrganizationStatus.DISABLED, NOW)
        assert session.get_one(Organization, recent_org).status == OrganizationStatus.CHURNED
        assert session.get_one(Campaign, automated).status == CampaignStatus.PAUSED
        assert session.get_one(Campaign, one_off_id).status == CampaignStatus.ACTIVE
        # nothing of the organization is claimed any more
        claimed = RecipientGateway(session).claim_batch(
            S.PROOFED, S.SENDING_STAGED, 10, campaign_statuses=[CampaignStatus.ACTIVE]
        )
        assert len(claimed) == 0
    assert disable_churned_organizations(sessions, NOW).changed == []
