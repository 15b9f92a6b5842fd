"""Status tracking end to end: sandbox printers emit real signed webhooks onto a queue with SQS
semantics (local queue, and SQS on moto), ``process_status_queue`` applies them to the app
database (SQLite, or PostgreSQL when configured)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa
from moto import mock_aws
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import SessionFactory, unit_of_work
from mail_pipeline.db.mailpiece_status import (
    Key,
    MailpieceStatusGateway,
    PieceState,
    SettledRecipients,
)
from mail_pipeline.db.models import Mailpiece, MailpieceEvent, Recipient
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.addresses import Address
from mail_pipeline.domain.campaigns import Postage
from mail_pipeline.domain.mailpieces import MailpieceStatus as M
from mail_pipeline.domain.recipients import RecipientStatus as R
from mail_pipeline.integrations.printers.base import PostcardRequest, Printer, StatusUpdate
from mail_pipeline.integrations.printers.sandbox import emit_due_webhooks, sandbox_printers
from mail_pipeline.integrations.printers.sandbox.base import SandboxTimeline
from mail_pipeline.integrations.printers.webhooks import parse_envelope
from mail_pipeline.integrations.queues.base import DeleteFailure
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.integrations.queues.sqs import SqsQueue
from mail_pipeline.integrations.queues.sqs_setup import ensure_queue_with_dlq, make_sqs_client
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.services.status_tracking import (
    StatusRunResult,
    plan_moves,
    process_status_queue,
)
from tests.signed_webhooks import (
    intelliprint_message,
    letter_event,
    lob_event,
    lob_message,
    signing_printers,
    stannp_message,
    stannp_webhook,
)

QUICK = SandboxTimeline(
    in_production_after=1,
    mailed_after=2,
    in_transit_after=3,
    in_local_area_after=4,
    delivered_after=5,
)
US = Address.build(
    name="Jane Doe",
    line1="210 King St",
    city="San Francisco",
    postal_code="94107",
    country="US",
    region="CA",
)
GB = Address.build(
    name="John Smith",
    line1="10 Downing Street",
    city="London",
    postal_code="SW1A 2AA",
    country="GB",
)
VISIBILITY = 120
#: Lob reports created, mailed, in_transit, in_local_area and delivered for each piece.
LOB_WEBHOOKS_PER_PIECE = 5


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Printing:
    """The sandbox printers, and what they owe in webhooks."""

    def __init__(self) -> None:
        self.store = SandboxStore()
        self.printers: dict[str, Printer] = sandbox_printers(
            self.store, timeline=QUICK, sleep=lambda s: None
        )

    def mail(self, printer: str, recipient_id: int) -> str:
        to = US if printer == "lob" else GB
        piece = self.printers[printer].create_postcard(
            PostcardRequest(
                idempotency_key=f"test-{printer}-recipient-{recipient_id:06d}",
                recipient_id=recipient_id,
                campaign_id=1,
                organization_id=1,
                to=to,
                front_url="https://img.test/front.png",
                back_url="https://img.test/back.png",
                size="4x6" if to is US else "A6",
            )
        )
        return piece.provider_piece_id

    def webhooks(self) -> list[str]:
        """Every webhook due by now, as the status-queue messages the ingress would send."""
        bodies: list[str] = []
        emit_due_webhooks(self.store, bodies.append, now=time.time() + 60)
        return bodies

    def statuses(self, body: str) -> list[M]:
        return [u.status for u in parse_envelope(body, self.printers)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> Iterator[LocalQueue]:
    q = LocalQueue(":memory:", "mail-status", visibility_timeout=VISIBILITY, clock=clock)
    yield q
    q.close()


@pytest.fixture
def sessions(db_url: str) -> SessionFactory:
    return partial(unit_of_work, db_url)


@pytest.fixture
def printing() -> Printing:
    return Printing()


@pytest.fixture
def sent_recipients(make_campaign: Any, add_recipients: Any) -> Callable[[int], list[int]]:
    _, campaign_id = make_campaign()
    return lambda n: add_recipients(campaign_id, n, R.SENT, sent_at=datetime.now(UTC))


def record_pieces(db_url: str, pieces: dict[int, tuple[str, str]], status: M = M.CREATED) -> None:
    """Mailpiece rows as the mailing run writes them: ``{recipient_id: (printer, piece_id)}``."""
    with unit_of_work(db_url) as session:
        for recipient_id, (printer, piece_id) in pieces.items():
            recipient = session.get_one(Recipient, recipient_id)
            session.add(
                Mailpiece(
                    recipient_id=recipient_id,
                    organization_id=recipient.organization_id,
                    campaign_id=recipient.campaign_id,
                    printer=printer,
                    idempotency_key=f"test-{printer}-recipient-{recipient_id:06d}",
                    provider_piece_id=piece_id,
                    status=status,
                    postage=Postage.FIRST_CLASS,
                )
            )


def run(sessions: SessionFactory, queue: Any, printing: Printing, **kw: Any) -> StatusRunResult:
    return process_status_queue(sessions, queue, printing.printers, **kw)


def snapshot(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    with unit_of_work(db_url) as session:
        return {
            "pieces": [
                tuple(row)
                for row in session.execute(
                    sa.select(
                        Mailpiece.id,
                        Mailpiece.status,
                        Mailpiece.last_event_at,
                        Mailpiece.delivered_at,
                        Mailpiece.updated_at,
                    ).order_by(Mailpiece.id)
                )
            ],
            "events": [
                tuple(row)
                for row in session.execute(
                    sa.select(
                        MailpieceEvent.mailpiece_id,
                        MailpieceEvent.provider_event_id,
                        MailpieceEvent.status,
                    ).order_by(MailpieceEvent.id)
                )
            ],
            "recipients": [
                tuple(row)
                for row in session.execute(
                    sa.select(
                        Recipient.id, Recipient.status, Recipient.received_at, Recipient.updated_at
                    ).order_by(Recipient.id)
                )
            ],
        }


def piece_of(session: Session, recipient_id: int) -> Mailpiece:
    return session.execute(
        sa.select(Mailpiece).where(Mailpiece.recipient_id == recipient_id)
    ).scalar_one()


def test_webhooks_move_pieces_along_and_delivered_recipients_to_received(
    db_url: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    clock: FakeClock,
    printing: Printing,
    sent_recipients: Callable[[int], list[int]],
) -> None:
    lob_1, lob_2, stannp, intelliprint = sent_recipients(4)
    pieces = {
        lob_1: ("lob", printing.mail("lob", lob_1)),
        lob_2: ("lob", printing.mail("lob", lob_2)),
        stannp: ("stannp", printing.mail("stannp", stannp)),
        intelliprint: ("intelliprint", printing.mail("intelliprint", intelliprint)),
    }
    record_pieces(db_url, pieces)
    webhooks = printing.webhooks()
    queue.send_batch(webhooks)

    result = run(sessions, queue, printing)

    # Lob 5 + 5, Stannp 4 (in production .. delivered), IntelliPrint 3 (.. in transit).
    assert len(webhooks) == 17
    assert result == StatusRunResult(
        received=17,
        updates_applied=17,
        pieces_advanced=4,
        recipients_received=3,
        messages_deleted=17,
    )
    with unit_of_work(db_url) as session:
        for recipient_id in (lob_1, lob_2, stannp):
            piece = piece_of(session, recipient_id)
            recipient = session.get_one(Recipient, recipient_id)
            assert piece.status == M.DELIVERED
            assert piece.delivered_at is not None
            assert piece.last_event_at == piece.delivered_at
            assert recipient.status == R.RECEIVED
            assert recipient.received_at == piece.delivered_at
        assert piece_of(session, intelliprint).status == M.IN_TRANSIT
        assert piece_of(session, intelliprint).delivered_at is None
        assert session.get_one(Recipient, intelliprint).status == R.SENT
        events = session.scalars(
            sa.select(MailpieceEvent.status).where(
                MailpieceEvent.mailpiece_id == piece_of(session, lob_1).id
            )
        ).all()
        assert sorted(events) == sorted(
            [M.CREATED, M.MAILED, M.IN_TRANSIT, M.IN_LOCAL_AREA, M.DELIVERED]
        )
    # Deleted, not merely hidden: nothing comes back after the visibility timeout.
    clock.advance(VISIBILITY + 1)
    assert queue.receive() == []
    assert queue.dead_letters() == []


def test_a_redelivered_webhook_changes_nothing(
    db_url: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    printing: Printing,
    sent_recipients: Callable[[int], list[int]],
) -> None:
    (recipient_id,) = sent_recipients(1)
    record_pieces(db_url, {recipient_id: ("lob", printing.mail("lob", recipient_id))})
    webhooks = printing.webhooks()
    queue.send_batch(webhooks)
    first = run(sessions, queue, printing)
    assert first.updates_applied == LOB_WEBHOOKS_PER_PIECE
    before = snapshot(db_url)

    queue.send_batch(webhooks)  # every webhook again (at-least-once delivery)
    queue.send(webhooks[-1])  # and the delivered one a third time, in the same batch
    again = run(sessions, queue, printing)

    assert again == StatusRunResult(
        received=LOB_WEBHOOKS_PER_PIECE + 1,
        events_duplicated=LOB_WEBHOOKS_PER_PIECE + 1,
        messages_deleted=LOB_WEBHOOKS_PER_PIECE + 1,
    )
    assert snapshot(db_url) == before
    assert queue.approximate_depth() == 0


def test_unparseable_messages_go_to_the_dlq_with_their_reason(
    db_url: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    printing: Printing,
    sent_recipients: Callable[[int], list[int]],
) -> None:
    (recipient_id,) = sent_recipients(1)
    record_pieces(db_url, {recipient_id: ("lob", printing.mail("lob", recipient_id))})
    webhooks = printing.webhooks()
    tampered = json.loads(webhooks[0])
    tampered["body"] = tampered["body"].replace('"', ' "', 1)
    queue.send("not json")
    queue.send(json.dumps({"printer": "royal_mail", "headers": {}, "body": "{}"}))
    queue.send(json.dumps(tampered))
    queue.send_batch(webhooks)

    result = run(sessions, queue, printing)

    assert result.dead_lettered == 3
    assert result.updates_applied == LOB_WEBHOOKS_PER_PIECE
    assert result.messages_deleted == LOB_WEBHOOKS_PER_PIECE
    assert result.recipients_received == 1
    dead = queue.dead_letters()
    assert [d.body for d in dead] == ["not json", dead[1].body, json.dumps(tampered)]
    assert [d.reason for d in dead] == list(result.dead_letter_reasons)
    assert "not JSON" in dead[0].reason
    assert "'royal_mail', which is not configured" in dead[1].reason
    assert "does not match" in dead[2].reason
    assert all(d.source_queue == "mail-status" for d in dead)
    assert queue.approximate_depth() == 0


def test_a_webhook_for_a_piece_not_recorded_yet_waits_on_the_queue(
    db_url: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    clock: FakeClock,
    printing: Printing,
    sent_recipients: Callable[[int], list[int]],
) -> None:
    known, early = sent_recipients(2)
    record_pieces(db_url, {known: ("lob", printing.mail("lob", known))})
    early_piece = printing.mail("lob", early)  # the printer has it; our row is not written
    queue.send_batch(printing.webhooks())

    first = run(sessions, queue, printing)

    assert first.received == 2 * LOB_WEBHOOKS_PER_PIECE
    assert first.unknown_pieces == 1
    assert first.messages_retained == LOB_WEBHOOKS_PER_PIECE
    assert first.messages_deleted == LOB_WEBHOOKS_PER_PIECE
    assert first.recipients_received == 1
    assert queue.receive() == []  # hidden until the visibility timeout, not deleted

    record_pieces(db_url, {early: ("lob", early_piece)})  # the mailing run catches up
    clock.advance(VISIBILITY + 1)
    second = run(sessions, queue, printing)

    assert second.received == LOB_WEBHOOKS_PER_PIECE
    assert second.updates_applied == LOB_WEBHOOKS_PER_PIECE
    assert second.unknown_pieces == 0
    assert second.recipients_received == 1
    clock.advance(VISIBILITY + 1)
    assert queue.receive() == []


def test_a_webhook_for_a_piece_never_recorded_is_dead_lettered_on_its_last_delivery(
    db_url: str,
    sessions: SessionFactory,
    clock: FakeClock,
    printing: Printing,
) -> None:
    """Kept while the mailing run may still record the piece; on the delivery the redrive
    policy would be the last (receive count = max receive count), dead-lettered by the
    consumer with a reason naming the piece, not moved silently by the redrive."""
    queue = LocalQueue(
        ":memory:", "mail-status", visibility_timeout=VISIBILITY, max_receive_count=3, clock=clock
    )
    piece = printing.mail("lob", 99)
    queue.send(printing.webhooks()[-1])
    for _ in range(2):
        kept = run(sessions, queue, printing, max_receive_count=3)
        assert (kept.messages_retained, kept.unknown_pieces, kept.dead_lettered) == (1, 1, 0)
        clock.advance(VISIBILITY + 1)

    last = run(sessions, queue, printing, max_receive_count=3)

    assert (last.received, last.messages_retained, last.dead_lettered) == (1, 0, 1)
    assert last.dead_letter_reasons == (f"unknown piece {piece} after 3 deliveries",)
    (dead,) = queue.dead_letters()
    assert dead.reason == f"unknown piece {piece} after 3 deliveries"
    clock.advance(VISIBILITY + 1)
    assert queue.receive() == []


def test_late_events_are_recorded_but_never_move_a_piece_back(
    db_url: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    printing: Printing,
    sent_recipients: Callable[[int], list[int]],
) -> None:
    (recipient_id,) = sent_recipients(1)
    record_pieces(db_url, {recipient_id: ("lob", printing.mail("lob", recipient_id))})
    webhooks = printing.webhooks()
    (delivered,) = [w for w in webhooks if printing.statuses(w) == [M.DELIVERED]]
    queue.send(delivered)
    assert run(sessions, queue, printing).recipients_received == 1
    with unit_of_work(db_url) as session:
        delivered_at = piece_of(session, recipient_id).delivered_at

    late = [w for w in webhooks if w != delivered]
    queue.send_batch(late[::-1])
    result = run(sessions, queue, printing)

    assert result.updates_applied == len(late)
    assert result.pieces_advanced == 0
    assert result.recipients_received == 0
    assert result.messages_deleted == len(late)
    with unit_of_work(db_url) as session:
        piece = piece_of(session, recipient_id)
        assert piece.status == M.DELIVERED
        assert piece.delivered_at == piece.last_event_at == delivered_at
        count = session.scalar(
            sa.select(sa.func.count()).where(MailpieceEvent.mailpiece_id == piece.id)
        )
        assert count == LOB_WEBHOOKS_PER_PIECE


def test_nothing_is_deleted_when_the_transaction_fails(
    db_url: str,
    queue: LocalQueue,
    clock: FakeClock,
    printing: Printing,
    sent_recipients: Callable[[int], list[int]],
) -> None:
    (recipient_id,) = sent_recipients(1)
    record_pieces(db_url, {recipient_id: ("lob", printing.mail("lob", recipient_id))})
    queue.send_batch(printing.webhooks())
    before = snapshot(db_url)

    @contextmanager
    def failing_commit() -> Iterator[Session]:
        with unit_of_work(db_url) as session:
            yield session
            session.flush()
            raise sa.exc.OperationalError("COMMIT", {}, Exception("the database went away"))

    with pytest.raises(sa.exc.OperationalError):
        run(failing_commit, queue, printing)

    assert snapshot(db_url) == before
    clock.advance(VISIBILITY + 1)
    assert queue.approximate_depth() == LOB_WEBHOOKS_PER_PIECE
    retried = run(partial(unit_of_work, db_url), queue, printing)
    assert retried.updates_applied == LOB_WEBHOOKS_PER_PIECE
    assert retried.recipients_received == 1
    assert retried.messages_deleted == LOB_WEBHOOKS_PER_PIECE


class LosingDeletes(LocalQueue):
    """A queue whose deletes all fail, as with receipt handles gone stale."""

    def delete(self, receipt_handles: Any) -> list[DeleteFailure]:
        return [DeleteFailure(h, "ReceiptHandleIsInvalid", "stale") for h in receipt_handles]


def test_a_failed_delete_is_counted_and_the_message_is_harmless_next_time(
    db_url: str,
    sessions: SessionFactory,
    clock: FakeClock,
    printing: Printing,
    sent_recipients: Callable[[int], list[int]],
) -> None:
    (recipient_id,) = sent_recipients(1)
    record_pieces(db_url, {recipient_id: ("lob", printing.mail("lob", recipient_id))})
    losing = LosingDeletes(":memory:", "mail-status", visibility_timeout=VISIBILITY, clock=clock)
    losing.send_batch(printing.webhooks())

    first = run(sessions, losing, printing)
    assert first.delete_failures == LOB_WEBHOOKS_PER_PIECE
    assert first.messages_deleted == 0
    after_first = snapshot(db_url)

    clock.advance(VISIBILITY + 1)
    second = run(sessions, losing, printing)
    assert second.received == LOB_WEBHOOKS_PER_PIECE
    assert second.events_duplicated == LOB_WEBHOOKS_PER_PIECE
    assert second.updates_applied == second.pieces_advanced == second.recipients_received == 0
    assert snapshot(db_url) == after_first


def test_a_pass_reads_at_most_max_receives_batches_of_ten(
    db_url: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    printing: Printing,
    sent_recipients: Callable[[int], list[int]],
) -> None:
    ids = sent_recipients(3)
    record_pieces(db_url, {r: ("lob", printing.mail("lob", r)) for r in ids})
    queue.send_batch(printing.webhooks())

    assert run(sessions, queue, printing, max_receives=1).received == 10
    assert run(sessions, queue, printing, max_receives=1).received == 5
    assert run(sessions, queue, printing, max_receives=1).received == 0


def test_concurrent_consumers_of_the_same_webhooks_apply_them_once(
    db_url: str,
    sessions: SessionFactory,
    clock: FakeClock,
    printing: Printing,
    sent_recipients: Callable[[int], list[int]],
) -> None:
    ids = sent_recipients(4)
    record_pieces(db_url, {r: ("lob", printing.mail("lob", r)) for r in ids})
    webhooks = printing.webhooks()
    queues = [
        LocalQueue(":memory:", f"mail-status-{i}", visibility_timeout=VISIBILITY, clock=clock)
        for i in range(3)
    ]
    for q in queues:
        q.send_batch(webhooks)  # SQS may hand the same webhook to several consumers
    results: list[StatusRunResult] = []
    start = threading.Barrier(len(queues))

    def consume(q: LocalQueue) -> None:
        start.wait()
        results.append(run(sessions, q, printing))

    threads = [threading.Thread(target=consume, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(results) == len(queues)
    assert sum(r.updates_applied for r in results) == len(webhooks)
    assert sum(r.events_duplicated for r in results) == 2 * len(webhooks)
    assert sum(r.pieces_advanced for r in results) == len(ids)
    assert sum(r.recipients_received for r in results) == len(ids)
    with unit_of_work(db_url) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(MailpieceEvent)) == len(
            webhooks
        )
        statuses = session.scalars(sa.select(Recipient.status).where(Recipient.id.in_(ids)))
        assert set(statuses) == {R.RECEIVED}


def update(status: M, minute: int, event: str | None = None) -> StatusUpdate:
    return StatusUpdate(
        printer="lob",
        provider_piece_id="psc_1",
        provider_event_id=event or f"evt_{status}_{minute}",
        status=status,
        occurred_at=datetime(2025, 1, 1, 10, minute, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("current", "updates", "expected"),
    [
        (M.CREATED, [update(M.IN_TRANSIT, 5), update(M.MAILED, 1)], M.IN_TRANSIT),
        # What happened first wins among final statuses, whatever order they arrive in.
        (M.IN_TRANSIT, [update(M.RETURNED, 30), update(M.DELIVERED, 20)], M.DELIVERED),
        (M.DELIVERED, [update(M.IN_TRANSIT, 1)], None),
        (M.RETURNED, [update(M.DELIVERED, 40)], None),
    ],
)
def test_plan_moves_folds_a_pieces_updates_in_time_order(
    current: M, updates: list[StatusUpdate], expected: M | None
) -> None:
    key: Key = ("lob", "psc_1")
    piece = PieceState(1, 7, "lob", "psc_1", current, None)
    (move,) = plan_moves({key: piece}, updates)
    assert move.status == expected
    assert move.last_event_at == max(u.occurred_at for u in updates)
    assert move.delivered_at == (
        datetime(2025, 1, 1, 10, 20, tzinfo=UTC) if expected == M.DELIVERED else None
    )


def test_plan_moves_skips_a_piece_that_learns_nothing_new() -> None:
    seen = datetime(2025, 1, 1, 11, 0, tzinfo=UTC)
    piece = PieceState(1, 7, "lob", "psc_1", M.DELIVERED, seen)
    assert plan_moves({("lob", "psc_1"): piece}, [update(M.IN_TRANSIT, 1)]) == []
    late_report = replace(update(M.IN_TRANSIT, 1), occurred_at=seen + timedelta(hours=1))
    (move,) = plan_moves({("lob", "psc_1"): piece}, [late_report])
    assert move.status is None
    assert move.last_event_at == seen + timedelta(hours=1)


# -- SQS (moto) --------------------------------------------------------------------------


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield make_sqs_client(
            region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        )


def sqs_counts(client: Any, url: str) -> tuple[int, int]:
    attrs = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )


def test_the_status_flow_on_sqs(
    db_url: str,
    sessions: SessionFactory,
    sqs: Any,
    printing: Printing,
    sent_recipients: Callable[[int], list[int]],
) -> None:
    url, dlq_url = ensure_queue_with_dlq(
        sqs, "mail-status", max_receive_count=5, visibility_timeout=VISIBILITY
    )
    queue = SqsQueue(url, client=sqs)
    delivered, early = sent_recipients(2)
    record_pieces(db_url, {delivered: ("lob", printing.mail("lob", delivered))})
    printing.mail("lob", early)  # not recorded: its webhooks must stay on the queue
    webhooks = printing.webhooks()
    queue.send_batch([*webhooks, "not json"])

    result = run(sessions, queue, printing)

    assert result.received == 2 * LOB_WEBHOOKS_PER_PIECE + 1
    assert result.updates_applied == LOB_WEBHOOKS_PER_PIECE
    assert result.recipients_received == 1
    assert result.messages_deleted == LOB_WEBHOOKS_PER_PIECE
    assert result.messages_retained == LOB_WEBHOOKS_PER_PIECE
    assert result.dead_lettered == 1
    assert sqs_counts(sqs, url) == (0, LOB_WEBHOOKS_PER_PIECE)
    (dead,) = sqs.receive_message(QueueUrl=dlq_url, MessageAttributeNames=["All"])["Messages"]
    assert dead["Body"] == "not json"
    assert "not JSON" in dead["MessageAttributes"]["reason"]["StringValue"]
    with unit_of_work(db_url) as session:
        assert session.get_one(Recipient, delivered).status == R.RECEIVED
        assert session.get_one(Recipient, early).status == R.SENT


def test_a_recipient_marked_sent_after_its_delivery_can_be_caught_up(
    db_url: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    printing: Printing,
    make_campaign: Any,
    add_recipients: Any,
) -> None:
    _, campaign_id = make_campaign()
    sending, in_transit = add_recipients(campaign_id, 2, R.SENDING)
    record_pieces(db_url, {sending: ("lob", printing.mail("lob", sending))})
    record_pieces(db_url, {in_transit: ("lob", "psc_not_delivered")}, status=M.IN_TRANSIT)
    queue.send_batch(printing.webhooks())

    applied = run(sessions, queue, printing)
    assert applied.pieces_advanced == 1
    assert applied.recipients_received == 0  # still Sending: the guarded move skips it

    with unit_of_work(db_url) as session:
        recipients = RecipientGateway(session)
        assert recipients.transition_many([sending, in_transit], R.SENDING, R.SENT)
        settled = MailpieceStatusGateway(session).settle_sent([sending, in_transit])
    assert settled == SettledRecipients(received=(sending,))
    with unit_of_work(db_url) as session:
        assert session.get_one(Recipient, sending).status == R.RECEIVED
        assert (
            session.get_one(Recipient, sending).received_at
            == piece_of(session, sending).delivered_at
        )
        assert session.get_one(Recipient, in_transit).status == R.SENT


# -- failed and cancelled pieces -------------------------------------------------------------

FAILED_PIECES = {"lob": "psc_failed_1", "stannp": "5551", "intelliprint": "print_failed_1"}


@pytest.mark.parametrize(
    ("printer", "webhook", "status", "reason"),
    [
        (
            "lob",
            lambda piece: lob_message(lob_event("evt_f", piece, "postcard.failed")),
            M.FAILED,
            "lob reported postcard.failed: In Transit at 94107",
        ),
        (
            "lob",
            lambda piece: lob_message(
                lob_event("evt_f", piece, "postcard.rejected", body={"id": piece})
            ),
            M.FAILED,
            "lob reported postcard.rejected",
        ),
        (
            "lob",
            lambda piece: lob_message(
                lob_event("evt_f", piece, "postcard.deleted", body={"id": piece})
            ),
            M.CANCELLED,
            "lob reported postcard.deleted",
        ),
        (
            "stannp",
            lambda piece: stannp_message(stannp_webhook([{"id": piece, "status": "cancelled"}])),
            M.CANCELLED,
            "stannp reported cancelled",
        ),
        (
            "intelliprint",
            lambda piece: intelliprint_message(
                letter_event(piece, "failed_wrong_address", returned={"reason": "Unknown"})
            ),
            M.FAILED,
            "intelliprint reported failed_wrong_address: Unknown",
        ),
        (
            "intelliprint",
            lambda piece: intelliprint_message(letter_event(piece, "cancelled")),
            M.CANCELLED,
            "intelliprint reported cancelled",
        ),
    ],
)
def test_a_failed_or_cancelled_piece_moves_its_recipient_from_sent_to_error(
    printer: str,
    webhook: Callable[[str], str],
    status: M,
    reason: str,
    db_url: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    sent_recipients: Callable[[int], list[int]],
) -> None:
    failing, other = sent_recipients(2)
    record_pieces(db_url, {failing: (printer, FAILED_PIECES[printer]), other: ("lob", "psc_ok")})
    queue.send_batch([webhook(FAILED_PIECES[printer]), lob_message(lob_event("evt_ok", "psc_ok"))])

    result = process_status_queue(sessions, queue, signing_printers())

    assert (result.pieces_advanced, result.recipients_failed, result.messages_deleted) == (2, 1, 2)
    with unit_of_work(db_url) as session:
        assert piece_of(session, failing).status == status
        recipient = session.get_one(Recipient, failing)
        assert recipient.status == R.ERROR
        assert recipient.error_from_status == R.SENT
        assert recipient.status_reason == reason
        assert session.get_one(Recipient, other).status == R.SENT


def test_a_returned_piece_leaves_its_recipient_sent(
    db_url: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    sent_recipients: Callable[[int], list[int]],
) -> None:
    (recipient_id,) = sent_recipients(1)
    record_pieces(db_url, {recipient_id: ("lob", "psc_back")})
    queue.send(lob_message(lob_event("evt_back", "psc_back", "postcard.returned_to_sender")))

    result = process_status_queue(sessions, queue, signing_printers())

    assert (result.pieces_advanced, result.recipients_failed) == (1, 0)
    with unit_of_work(db_url) as session:
        assert piece_of(session, recipient_id).status == M.RETURNED
        assert session.get_one(Recipient, recipient_id).status == R.SENT


def test_a_failure_applied_while_the_recipient_was_sending_settles_it_in_error(
    db_url: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    make_campaign: Any,
    add_recipients: Any,
) -> None:
    """The printer rejects the piece while the mailing run is still on its follow-ups: the
    status pass moves the piece only; marking the recipient Sent then settles it in Error."""
    _, campaign_id = make_campaign()
    sending, delivered, in_transit = add_recipients(campaign_id, 3, R.SENDING)
    record_pieces(
        db_url,
        {sending: ("lob", "psc_race"), delivered: ("lob", "psc_done"), in_transit: ("lob", "p")},
    )
    queue.send_batch(
        [
            lob_message(
                lob_event("evt_race", "psc_race", "postcard.rejected", body={"id": "psc_race"})
            ),
            lob_message(lob_event("evt_done", "psc_done", "postcard.delivered")),
        ]
    )
    applied = process_status_queue(sessions, queue, signing_printers())
    assert (applied.pieces_advanced, applied.recipients_failed) == (2, 0)  # still Sending

    with unit_of_work(db_url) as session:
        ids = [sending, delivered, in_transit]
        assert RecipientGateway(session).transition_many(ids, R.SENDING, R.SENT) == ids
        settled = MailpieceStatusGateway(session).settle_sent(ids)

    assert settled == SettledRecipients(received=(delivered,), failed=(sending,))
    with unit_of_work(db_url) as session:
        recipient = session.get_one(Recipient, sending)
        assert recipient.status == R.ERROR
        assert recipient.error_from_status == R.SENT
        assert recipient.status_reason == "lob reported the mailpiece failed"
        assert session.get_one(Recipient, delivered).status == R.RECEIVED
        assert session.get_one(Recipient, in_transit).status == R.SENT
