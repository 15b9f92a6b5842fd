"""Claims as leases: a run renews its batch, loses it to recovery when it goes silent, and
writes nothing after that; a dead printed piece gets a new print attempt. On SQLite and (with
MAIL_PIPELINE_TEST_DATABASE_URL) PostgreSQL, with the real sandboxes."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.leases import BatchLeases
from mail_pipeline.db.models import Mailpiece, SideEffect
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.claims import LeasePolicy
from mail_pipeline.domain.mailpieces import MailpieceStatus, PrintedPiece
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.printers.base import PostcardRequest, Printer
from mail_pipeline.integrations.printers.strategy import DEFAULT_ROUTES, PrinterStrategy
from mail_pipeline.services.leases import BatchHold
from mail_pipeline.services.mailing import mail_batch
from mail_pipeline.services.recovery import recover_expired_claims
from tests.integration.test_pipeline_services import Shop

S = RecipientStatus
LATER = timedelta(minutes=10)


@pytest.fixture
def shop(db_url: str, tmp_path: Path) -> Shop:
    return Shop(db_url, tmp_path)


def _lease_expiry(shop: Shop, batch: str) -> datetime:
    with unit_of_work(shop.db_url) as session:
        lease = BatchLeases(session).get(batch)
    assert lease is not None
    return lease.expires_at


def test_a_working_run_renews_its_lease_and_learns_when_it_is_gone(shop: Shop) -> None:
    campaign = shop.campaign(shop.organization())
    shop.recipients(campaign, 2)
    batch = shop.claim(S.PENDING, S.PROOFING_STAGED, campaign)
    policy = LeasePolicy(
        running=timedelta(seconds=30), renew_every=timedelta(seconds=0.05), staged=timedelta(0)
    )
    hold = BatchHold(shop.sessions, batch, "run-1", policy=policy)
    assert hold.start(S.PROOFING_STAGED, S.PROOFING) is not None
    first = _lease_expiry(shop, batch)

    with hold:
        deadline = time.monotonic() + 10
        while _lease_expiry(shop, batch) == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _lease_expiry(shop, batch) > first, "the thread renewed the lease"

    assert shop.recover(after=LATER).returned == Counter({"Proofing": 2})
    assert hold.renew() is False and hold.lost.is_set(), "the next renewal finds it gone"


def test_a_run_that_cannot_take_its_batch_says_why(shop: Shop) -> None:
    """The run's log names the reason it found: another run's hold, or a batch that
    recovery already returned."""
    campaign = shop.campaign(shop.organization())
    shop.recipients(campaign, 2)
    batch = shop.claim(S.PENDING, S.PROOFING_STAGED, campaign)
    assert BatchHold(shop.sessions, batch, "run-1").start(S.PROOFING_STAGED, S.PROOFING)

    second = BatchHold(shop.sessions, batch, "run-2")
    assert second.start(S.PROOFING_STAGED, S.PROOFING) is None
    assert second.refusal == "another run holds it (run-1)"

    assert shop.recover(after=LATER).returned == Counter({"Proofing": 2})
    third = BatchHold(shop.sessions, batch, "run-3")
    assert third.start(S.PROOFING_STAGED, S.PROOFING) is None
    assert third.refusal is not None
    assert third.refusal.startswith("it is no longer waiting for a run (recovery returned")


class RecoversAfterFirstPrint(Printer):
    """Lob, but the run loses its batch right after the first postcard: recovery (run as if
    the lease had expired) returns the batch while the run is still working."""

    name = "lob"

    def __init__(self, inner: Printer, shop: Shop) -> None:
        self.inner = inner
        self.shop = shop
        self.creates = 0

    def create_postcard(self, request: PostcardRequest) -> PrintedPiece:
        piece = self.inner.create_postcard(request)
        self.creates += 1
        if self.creates == 1:
            self.shop.recover(after=LATER)
        return piece

    def find_postcard(self, idempotency_key: str, recipient_id: int) -> PrintedPiece | None:
        return self.inner.find_postcard(idempotency_key, recipient_id)

    def cancel_postcard(self, provider_piece_id: str) -> None:
        self.inner.cancel_postcard(provider_piece_id)

    def parse_webhook(self, envelope):  # type: ignore[no-untyped-def]
        return self.inner.parse_webhook(envelope)


def test_a_run_that_lost_its_batch_asks_no_printer_for_the_rest(shop: Shop) -> None:
    org = shop.organization()
    campaign = shop.campaign(org)
    ids = shop.recipients(campaign, 4, S.PROOFED)
    batch = shop.claim(S.PROOFED, S.SENDING_STAGED, campaign)
    healthy = shop.mailing()
    lob = RecoversAfterFirstPrint(healthy.printers.printers["lob"], shop)
    losing = replace(healthy, printers=PrinterStrategy(DEFAULT_ROUTES, {"lob": lob}))

    late = mail_batch(shop.sessions, batch, losing, run_id="slow-run", concurrency=1)

    assert (late.sent, late.lost, late.errors, late.deferred) == (0, 4, {}, {})
    assert shop.printed()["lob"] == 1, "no printer call after the batch was taken away"
    assert shop.status(ids) == dict.fromkeys(ids, S.SENDING_STAGED)
    assert shop.meter_events() == [], "not its recipients any more: no follow-ups either"

    resumed = mail_batch(shop.sessions, batch, healthy, run_id="resume-run")

    # the late run recorded the piece Lob accepted for it: the resume run just finishes it
    assert (resumed.sent, resumed.reconciled, resumed.created) == (4, 0, 3)
    assert shop.printed()["lob"] == 4, "one postcard each, ever"
    assert shop.status(ids) == dict.fromkeys(ids, S.SENT)
    with unit_of_work(shop.db_url) as session:
        assert BatchLeases(session).get(batch) is None, "a finished batch releases its lease"


def test_a_piece_the_printer_failed_is_printed_again_with_a_new_key_and_billed_once(
    shop: Shop,
) -> None:
    org = shop.organization()
    campaign = shop.campaign(org)
    (rid,) = shop.recipients(campaign, 1, S.PROOFED)
    services = shop.mailing()
    mail_batch(shop.sessions, shop.claim(S.PROOFED, S.SENDING_STAGED, campaign), services)
    first = shop.mailpieces()[rid]
    # The printer failed the accepted piece; status tracking put the recipient in Error and
    # an operator retried it (re-proofed: Error -> Pending -> ... -> Proofed).
    with unit_of_work(shop.db_url) as session:
        session.execute(
            update(Mailpiece).where(Mailpiece.id == first.id).values(status=MailpieceStatus.FAILED)
        )
        gateway = RecipientGateway(session)
        assert gateway.transition(rid, S.SENT, S.ERROR, values={"status_reason": "lob failed"})
        assert gateway.transition(rid, S.ERROR, S.PENDING)
        assert gateway.transition(rid, S.PENDING, S.PROOFING_STAGED)
    with unit_of_work(shop.db_url) as session:
        RecipientGateway(session).transition(rid, S.PROOFING_STAGED, S.PROOFING)
        RecipientGateway(session).transition(
            rid, S.PROOFING, S.PROOFED, values={"proof_image_ids": ["img-2-front", "img-2-back"]}
        )

    retried = mail_batch(shop.sessions, shop.claim(S.PROOFED, S.SENDING_STAGED, campaign), services)

    assert (retried.sent, retried.created, retried.reconciled) == (1, 1, 0)
    assert shop.printed()["lob"] == 2
    with unit_of_work(shop.db_url) as session:
        pieces = session.scalars(
            select(Mailpiece).where(Mailpiece.recipient_id == rid).order_by(Mailpiece.attempt)
        ).all()
        effects = Counter(session.scalars(select(SideEffect.kind)))
    assert [(p.attempt, p.idempotency_key, p.status) for p in pieces] == [
        (1, f"mailpiece-recipient-{rid}", MailpieceStatus.FAILED),
        (2, f"mailpiece-recipient-{rid}-attempt-2", MailpieceStatus.CREATED),
    ]
    assert pieces[0].provider_piece_id != pieces[1].provider_piece_id
    assert len(shop.meter_events()) == 1, "the brand pays for one postcard per person"
    assert effects == Counter(
        {"billing_meter": 1, "cdp_event": 1, "image_deletion": 1, "image_deletion-2": 1}
    ), "each attempt's proofs are deleted"


def test_a_batch_that_waits_for_its_queued_run_is_kept(shop: Shop) -> None:
    campaign = shop.campaign(shop.organization())
    ids = shop.recipients(campaign, 2)
    batch = shop.claim(S.PENDING, S.PROOFING_STAGED, campaign)
    now = datetime.now(UTC) + LATER

    waiting = recover_expired_claims(shop.sessions, lambda b: b == batch, now=now)
    returned = recover_expired_claims(
        shop.sessions, lambda _b: False, now=now + timedelta(minutes=5)
    )

    assert (waiting.waiting, waiting.returned) == ([batch], Counter())
    assert returned.returned == Counter({"ProofingStaged": 2})
    assert list(returned.returned_batches) == [batch]
    assert returned.failed_runs == {}, "no run had taken it"
    assert shop.status(ids) == dict.fromkeys(ids, S.PENDING)
