"""The state machine in SQL, on SQLite and (with MAIL_PIPELINE_TEST_DATABASE_URL) PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Recipient
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.recipients import TRANSITIONS, IllegalTransition, RecipientStatus

S = RecipientStatus
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _status(db_url: str, recipient_id: int) -> RecipientStatus:
    with unit_of_work(db_url) as session:
        return session.get_one(Recipient, recipient_id).status


@pytest.mark.parametrize(("from_status", "to_status"), sorted(itertools.product(S, S)))
def test_every_transition_in_sql(
    db_url, make_campaign, add_recipients, from_status: RecipientStatus, to_status: RecipientStatus
) -> None:
    _, campaign_id = make_campaign()
    (rid,) = add_recipients(campaign_id, 1, status=from_status)
    with unit_of_work(db_url) as session:
        gateway = RecipientGateway(session)
        if to_status in TRANSITIONS[from_status]:
            assert gateway.transition(rid, from_status, to_status, now=NOW) is True
        else:
            with pytest.raises(IllegalTransition):
                gateway.transition(rid, from_status, to_status, now=NOW)
    expected = to_status if to_status in TRANSITIONS[from_status] else from_status
    assert _status(db_url, rid) == expected


def test_a_guarded_move_does_nothing_when_the_recipient_moved_on(
    db_url, make_campaign, add_recipients
) -> None:
    _, campaign_id = make_campaign()
    (rid,) = add_recipients(campaign_id, 1, status=S.PROOFED)
    with unit_of_work(db_url) as session:
        assert RecipientGateway(session).transition(rid, S.PENDING, S.PROOFING_STAGED) is False
    assert _status(db_url, rid) == S.PROOFED


def test_claim_takes_the_oldest_within_scope_and_marks_the_batch(
    db_url, make_campaign, add_recipients
) -> None:
    org_a, campaign_a = make_campaign()
    _, campaign_b = make_campaign()
    ids_a = add_recipients(campaign_a, 5)
    add_recipients(campaign_b, 5)
    with unit_of_work(db_url) as session:
        claim = RecipientGateway(session).claim_batch(
            S.PENDING, S.PROOFING_STAGED, 3, organization_id=org_a, run_id="run-1", now=NOW
        )
    assert claim.ids == ids_a[:3]
    assert {r.campaign_id for r in claim.recipients} == {campaign_a}
    with unit_of_work(db_url) as session:
        rows = session.scalars(select(Recipient).where(Recipient.id.in_(claim.ids))).all()
        assert {
            (r.status, r.batch_id, r.claimed_at, r.claimed_by_run, r.attempts) for r in rows
        } == {(S.PROOFING_STAGED, claim.batch_id, NOW, "run-1", 1)}


def test_claim_by_campaign_and_an_empty_claim(db_url, make_campaign, add_recipients) -> None:
    _, campaign_a = make_campaign()
    _, campaign_b = make_campaign()
    add_recipients(campaign_a, 2)
    ids_b = add_recipients(campaign_b, 2)
    with unit_of_work(db_url) as session:
        gateway = RecipientGateway(session)
        assert (
            gateway.claim_batch(S.PENDING, S.PROOFING_STAGED, 10, campaign_id=campaign_b).ids
            == ids_b
        )
        assert len(gateway.claim_batch(S.PROOFED, S.SENDING_STAGED, 10)) == 0


def test_claim_refuses_an_illegal_move(db_url) -> None:
    with unit_of_work(db_url) as session, pytest.raises(IllegalTransition):
        RecipientGateway(session).claim_batch(S.PENDING, S.SENDING_STAGED, 10)


def test_a_batch_moves_together_and_only_its_own_rows(
    db_url, make_campaign, add_recipients
) -> None:
    _, campaign_id = make_campaign()
    add_recipients(campaign_id, 6)
    with unit_of_work(db_url) as session:
        gateway = RecipientGateway(session)
        first = gateway.claim_batch(S.PENDING, S.PROOFING_STAGED, 3, now=NOW)
        second = gateway.claim_batch(S.PENDING, S.PROOFING_STAGED, 3, now=NOW)
    later = NOW + timedelta(seconds=30)
    with unit_of_work(db_url) as session:
        moved = RecipientGateway(session).transition_batch(
            first.batch_id, S.PROOFING_STAGED, S.PROOFING, run_id="run-9", now=later
        )
    assert [r.id for r in moved] == first.ids
    with unit_of_work(db_url) as session:
        statuses = {
            r.id: (r.status, r.claimed_at, r.claimed_by_run)
            for r in session.scalars(select(Recipient))
        }
    assert all(statuses[i] == (S.PROOFING, later, "run-9") for i in first.ids)
    assert all(statuses[i][0] == S.PROOFING_STAGED for i in second.ids)


def test_error_keeps_a_reason_and_the_failed_stage(db_url, make_campaign, add_recipients) -> None:
    _, campaign_id = make_campaign()
    (rid,) = add_recipients(campaign_id, 1, status=S.SENDING)
    with unit_of_work(db_url) as session:
        gateway = RecipientGateway(session)
        with pytest.raises(ValueError, match="human-readable reason"):
            gateway.mark_error(rid, S.SENDING, "  ")
        assert gateway.mark_error(rid, S.SENDING, "Lob: address_line1 too long", now=NOW)
    with unit_of_work(db_url) as session:
        row = session.get_one(Recipient, rid)
        assert (row.status, row.status_reason, row.error_from_status, row.claimed_at) == (
            S.ERROR,
            "Lob: address_line1 too long",
            S.SENDING,
            None,
        )


def test_stale_claims_are_found_by_age_and_grouped_by_batch(
    db_url, make_campaign, add_recipients
) -> None:
    _, campaign_id = make_campaign()
    add_recipients(campaign_id, 5)
    with unit_of_work(db_url) as session:
        gateway = RecipientGateway(session)
        old = gateway.claim_batch(
            S.PENDING, S.PROOFING_STAGED, 3, run_id="dead-run", now=NOW - timedelta(minutes=20)
        )
        gateway.claim_batch(S.PENDING, S.PROOFING_STAGED, 2, now=NOW - timedelta(minutes=1))
    with unit_of_work(db_url) as session:
        stale = RecipientGateway(session).find_stale_claims(timedelta(minutes=10), now=NOW)
    assert [(s.batch_id, s.status, s.run_id, s.count) for s in stale] == [
        (old.batch_id, S.PROOFING_STAGED, "dead-run", 3)
    ]
    assert stale[0].oldest_claimed_at == NOW - timedelta(minutes=20)


def test_counts_by_status(db_url, make_campaign, add_recipients) -> None:
    _, campaign_id = make_campaign()
    add_recipients(campaign_id, 3)
    add_recipients(campaign_id, 2, status=S.SENT)
    with unit_of_work(db_url) as session:
        assert RecipientGateway(session).counts_by_status(campaign_id=campaign_id) == {
            S.PENDING: 3,
            S.SENT: 2,
        }
