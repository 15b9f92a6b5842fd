"""The state machine in SQL, on SQLite and (with MAIL_PIPELINE_TEST_DATABASE_URL) PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.leases import BatchLeases
from mail_pipeline.db.models import Recipient
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.claims import DEFAULT_LEASES, ClaimStage
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
            S.PENDING, S.PROOFING_STAGED, 3, organization_id=org_a, now=NOW
        )
    assert claim.ids == ids_a[:3]
    assert {r.campaign_id for r in claim.recipients} == {campaign_a}
    with unit_of_work(db_url) as session:
        rows = session.scalars(select(Recipient).where(Recipient.id.in_(claim.ids))).all()
        assert {
            (r.status, r.batch_id, r.claimed_at, r.claimed_by_run, r.attempts) for r in rows
        } == {(S.PROOFING_STAGED, claim.batch_id, NOW, None, 1)}
        lease = BatchLeases(session).get(claim.batch_id)
    assert lease is not None
    assert (lease.organization_id, lease.stage, lease.holder, lease.takes) == (
        org_a,
        ClaimStage.PROOFING,
        None,
        0,
    )
    assert lease.expires_at == NOW + DEFAULT_LEASES.staged


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


def test_a_run_takes_its_batch_and_writes_its_token_on_it(
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
        moved = RecipientGateway(session).start_batch(
            first.batch_id, S.PROOFING_STAGED, S.PROOFING, "run-9", now=later
        )
    assert moved is not None and [r.id for r in moved] == first.ids
    with unit_of_work(db_url) as session:
        statuses = {
            r.id: (r.status, r.claimed_at, r.claimed_by_run)
            for r in session.scalars(select(Recipient))
        }
        lease = BatchLeases(session).get(first.batch_id)
    assert all(statuses[i] == (S.PROOFING, later, "run-9") for i in first.ids)
    assert all(statuses[i] == (S.PROOFING_STAGED, NOW, None) for i in second.ids)
    assert lease is not None
    assert (lease.holder, lease.takes, lease.expires_at) == (
        "run-9",
        1,
        later + DEFAULT_LEASES.running,
    )


def test_a_second_run_cannot_take_a_held_batch_but_the_holder_can_again(
    db_url, make_campaign, add_recipients
) -> None:
    _, campaign_id = make_campaign()
    add_recipients(campaign_id, 2)
    with unit_of_work(db_url) as session:
        batch = RecipientGateway(session).claim_batch(S.PENDING, S.PROOFING_STAGED, 5).batch_id
    with unit_of_work(db_url) as session:
        gateway = RecipientGateway(session)
        assert gateway.start_batch(batch, S.PROOFING_STAGED, S.PROOFING, "run-1") is not None
        assert gateway.start_batch(batch, S.PROOFING_STAGED, S.PROOFING, "run-2") is None
        again = gateway.start_batch(batch, S.PROOFING_STAGED, S.PROOFING, "run-1")
    assert again is not None and len(again) == 2, "an op retried inside its run keeps its batch"


def test_writes_are_fenced_by_the_holders_token(db_url, make_campaign, add_recipients) -> None:
    """Run A lost its batch (recovery returned it and run B took it): A's writes do nothing,
    though the recipients are in the very state A expects."""
    org, campaign_id = make_campaign()
    ids = add_recipients(campaign_id, 2, status=S.PROOFED)
    with unit_of_work(db_url) as session:
        gateway = RecipientGateway(session)
        batch = gateway.claim_batch(S.PROOFED, S.SENDING_STAGED, 5, now=NOW).batch_id
        gateway.start_batch(batch, S.SENDING_STAGED, S.SENDING, "run-a", now=NOW)
        assert gateway.holds(ids[0], S.SENDING, "run-a")
    with unit_of_work(db_url) as session:  # recovery, as services.recovery does it
        later = NOW + timedelta(minutes=5)
        assert BatchLeases(session).reclaim(batch, now=later) is not None
        returned = RecipientGateway(session).return_batch(
            batch, S.SENDING, S.SENDING_STAGED, now=later
        )
        BatchLeases(session).open(
            batch, org, ClaimStage.MAILING, expires_at=later + timedelta(minutes=1)
        )
    assert [r.id for r in returned] == ids
    with unit_of_work(db_url) as session:
        taken = RecipientGateway(session).start_batch(batch, S.SENDING_STAGED, S.SENDING, "run-b")
    assert taken is not None and [r.id for r in taken] == ids
    with unit_of_work(db_url) as session:
        gateway = RecipientGateway(session)
        assert gateway.holds(ids[0], S.SENDING, "run-a") is False
        assert gateway.transition(ids[0], S.SENDING, S.SENT, holder="run-a") is False
        assert gateway.mark_error(ids[1], S.SENDING, "late", holder="run-a") is False
        assert gateway.transition(ids[0], S.SENDING, S.SENT, holder="run-b") is True
    assert (_status(db_url, ids[0]), _status(db_url, ids[1])) == (S.SENT, S.SENDING)


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


def test_claims_without_a_lease_are_found_by_age_and_grouped_by_batch(
    db_url, make_campaign, add_recipients
) -> None:
    org, campaign_id = make_campaign()
    add_recipients(
        campaign_id,
        3,
        status=S.PROOFING,
        batch_id="old-batch",
        claimed_by_run="dead",
        claimed_at=NOW - timedelta(minutes=20),
    )
    add_recipients(
        campaign_id,
        2,
        status=S.PROOFING,
        batch_id="new-batch",
        claimed_at=NOW - timedelta(minutes=1),
    )
    with unit_of_work(db_url) as session:
        RecipientGateway(session).claim_batch(
            S.PENDING, S.PROOFING_STAGED, 5, now=NOW - timedelta(minutes=30)
        )  # old, but leased: not listed
    with unit_of_work(db_url) as session:
        unleased = RecipientGateway(session).unleased_claims(timedelta(minutes=10), now=NOW)
    assert [(u.batch_id, u.organization_id, u.status, u.run_id, u.count) for u in unleased] == [
        ("old-batch", org, S.PROOFING, "dead", 3)
    ]


def test_counts_by_status(db_url, make_campaign, add_recipients) -> None:
    _, campaign_id = make_campaign()
    add_recipients(campaign_id, 3)
    add_recipients(campaign_id, 2, status=S.SENT)
    with unit_of_work(db_url) as session:
        assert RecipientGateway(session).counts_by_status(campaign_id=campaign_id) == {
            S.PENDING: 3,
            S.SENT: 2,
        }
