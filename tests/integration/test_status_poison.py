"""One poison status message harms only itself.

Each test puts 30 good, validly signed webhooks and one poison one on the status queue and
runs one pass (SQLite, or PostgreSQL when configured): the 30 are applied, committed and
deleted; the poison message alone is in the dead-letter queue, with a reason a person can
read. Values PostgreSQL alone would refuse (an over-long id, a NUL) are caught by validation,
so they are refused on SQLite too. Failures that get past validation - whatever the
exception - roll back the message's savepoint only; a database outage propagates and
dead-letters nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa

from mail_pipeline.db.engine import SessionFactory, unit_of_work
from mail_pipeline.db.mailpiece_status import MailpieceStatusGateway
from mail_pipeline.db.models import Mailpiece, MailpieceEvent, Recipient
from mail_pipeline.domain.campaigns import Postage
from mail_pipeline.domain.mailpieces import MailpieceStatus as M
from mail_pipeline.domain.recipients import RecipientStatus as R
from mail_pipeline.integrations.printers.base import Printer, StatusUpdate, WebhookEnvelope
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.services.status_tracking import StatusRunResult, process_status_queue
from tests.signed_webhooks import (
    intelliprint_message,
    letter_event,
    lob_envelope,
    lob_event,
    lob_message,
    message,
    signing_printers,
    stannp_message,
    stannp_webhook,
)

VISIBILITY = 120
GOOD = 30
STANNP_PIECE = "900001"
INTELLIPRINT_PIECE = "print_900002"


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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


def record_piece(db_url: str, recipient_id: int, printer: str, piece_id: str) -> None:
    with unit_of_work(db_url) as session:
        recipient = session.get_one(Recipient, recipient_id)
        session.add(
            Mailpiece(
                recipient_id=recipient_id,
                organization_id=recipient.organization_id,
                campaign_id=recipient.campaign_id,
                printer=printer,
                idempotency_key=f"poison-{printer}-{recipient_id:06d}",
                provider_piece_id=piece_id,
                status=M.CREATED,
                postage=Postage.FIRST_CLASS,
            )
        )


class Pass:
    """30 Sent recipients with Lob pieces ``psc_good_<i>``, one Stannp and one IntelliPrint
    piece that poison messages can name, and the 30 good webhooks (in transit)."""

    def __init__(self, db_url: str, make_campaign: Any, add_recipients: Any) -> None:
        _, campaign_id = make_campaign()
        ids = add_recipients(campaign_id, GOOD + 2, R.SENT, sent_at=datetime.now(UTC))
        self.db_url = db_url
        self.good = ids[:GOOD]
        for i, recipient_id in enumerate(self.good):
            record_piece(db_url, recipient_id, "lob", f"psc_good_{i}")
        record_piece(db_url, ids[GOOD], "stannp", STANNP_PIECE)
        record_piece(db_url, ids[GOOD + 1], "intelliprint", INTELLIPRINT_PIECE)
        self.messages = [
            lob_message(lob_event(f"evt_good_{i}", f"psc_good_{i}")) for i in range(GOOD)
        ]

    def statuses(self) -> dict[str, M]:
        with unit_of_work(self.db_url) as session:
            return {
                piece: status
                for piece, status in session.execute(
                    sa.select(Mailpiece.provider_piece_id, Mailpiece.status)
                )
            }

    def events(self) -> int:
        with unit_of_work(self.db_url) as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(MailpieceEvent)))


@pytest.fixture
def a_pass(db_url: str, make_campaign: Any, add_recipients: Any) -> Pass:
    return Pass(db_url, make_campaign, add_recipients)


def assert_only_the_poison_is_dead(
    result: StatusRunResult, queue: LocalQueue, clock: FakeClock, a_pass: Pass, poison: str
) -> str:
    """The 30 good ones applied and deleted, the poison one alone in the DLQ; its reason."""
    assert result.received == GOOD + 1
    assert result.updates_applied == GOOD
    assert result.pieces_advanced == GOOD
    assert result.messages_deleted == GOOD
    assert result.dead_lettered == 1
    assert result.dead_letter_failures == 0
    statuses = a_pass.statuses()
    assert [statuses[f"psc_good_{i}"] for i in range(GOOD)] == [M.IN_TRANSIT] * GOOD
    assert statuses[STANNP_PIECE] == statuses[INTELLIPRINT_PIECE] == M.CREATED
    assert a_pass.events() == GOOD
    clock.advance(VISIBILITY + 1)
    assert queue.receive() == []
    (dead,) = queue.dead_letters()
    assert dead.body == poison
    assert (dead.reason,) == result.dead_letter_reasons
    return dead.reason


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


POISON: dict[str, tuple[Callable[[], str], str]] = {
    "numeric timestamp 1e20": (
        lambda: lob_message(lob_event("evt_p", "psc_good_0", date_created=1e20)),
        "lob date_created 1e+20 is not a representable time",
    ),
    "NaN timestamp": (
        lambda: lob_message(lob_event("evt_p", "psc_good_0", date_created=float("nan"))),
        "is not a representable time",
    ),
    "offset beyond the datetime range": (
        lambda: lob_message(
            lob_event("evt_p", "psc_good_0", date_created="0001-01-01T00:00:00+14:00")
        ),
        "'0001-01-01T00:00:00+14:00' is outside the representable range in UTC",
    ),
    "timestamp before 2000": (
        lambda: lob_message(lob_event("evt_p", "psc_good_0", date_created="1999-12-31T23:00Z")),
        "is before 2000-01-01",
    ),
    "timestamp years ahead": (
        lambda: lob_message(lob_event("evt_p", "psc_good_0", date_created="2999-01-01T00:00Z")),
        "is more than a day in the future",
    ),
    "lob event id over 200 characters": (
        lambda: lob_message(lob_event("e" * 201, "psc_good_0")),
        "event id is 201 characters long; at most 200 are stored",
    ),
    "svix id over 200 characters": (
        lambda: intelliprint_message(letter_event(INTELLIPRINT_PIECE), message_id="m" * 201),
        "event id is 201 characters long; at most 200 are stored",
    ),
    "piece id over 128 characters": (
        lambda: lob_message(lob_event("evt_p", "p" * 129)),
        "piece id is 129 characters long; at most 128 are stored",
    ),
    "stannp tracking_ref object": (
        lambda: stannp_message(
            stannp_webhook(
                [{"id": STANNP_PIECE, "status": "delivered", "tracking_ref": {"no": "text"}}]
            )
        ),
        "stannp tracking_ref is an object, not text",
    ),
    "stannp tracking_reference list": (
        lambda: stannp_message(
            stannp_webhook(
                [{"id": STANNP_PIECE, "status": "delivered", "tracking_reference": ["a"]}]
            )
        ),
        "stannp tracking_reference is a list, not text",
    ),
    "stannp piece id object": (
        lambda: stannp_message(stannp_webhook([{"id": {"x": 1}, "status": "delivered"}])),
        "stannp mailpiece id is an object, not text",
    ),
    "NUL in an event id": (
        lambda: lob_message(lob_event("evt_\x00", "psc_good_0")),
        "event id contains U+0000, which the database cannot store",
    ),
    "NUL in a detail": (
        lambda: intelliprint_message(
            letter_event(INTELLIPRINT_PIECE, "returned", returned={"reason": "Refused\x00"})
        ),
        "detail contains U+0000, which the database cannot store",
    ),
    "lone surrogate in a piece id": (
        lambda: lob_message(lob_event("evt_p", "psc_\ud800")),
        "piece id contains U+D800, which the database cannot store",
    ),
    "JSON nested 1,000 deep": (
        lambda: message(
            lob_envelope(
                json.dumps(lob_event("evt_p", "psc_good_0", body=None))[:-1]
                + f', "deep": {nested(1000)}}}'
            )
        ),
        "lob webhook body is nested too deep to decode",
    ),
    "JSON nested 200 deep": (
        lambda: message(
            lob_envelope(
                json.dumps(lob_event("evt_p", "psc_good_0", body=None))[:-1]
                + f', "deep": {nested(200)}}}'
            )
        ),
        "lob webhook body is nested more than 32 levels deep",
    ),
    "status message nested 1,000 deep": (
        lambda: nested(1000),
        "the status message is nested too deep to decode",
    ),
}


@pytest.mark.parametrize("case", list(POISON))
def test_a_poison_message_is_dead_lettered_alone_and_the_pass_is_applied(
    case: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    clock: FakeClock,
    a_pass: Pass,
) -> None:
    build, expected = POISON[case]
    poison = build()
    queue.send_batch([*a_pass.messages[:10], poison, *a_pass.messages[10:]])

    result = process_status_queue(sessions, queue, signing_printers())

    reason = assert_only_the_poison_is_dead(result, queue, clock, a_pass, poison)
    assert expected in reason
    assert reason.isascii() and reason.isprintable()


# -- failures past validation: whatever the exception, the savepoint ------------------------


class Unchecked(Printer):
    """A printer whose parser lets one value through unchecked, as a parser bug would: the
    update of event ``evt_poison`` gets ``field`` = ``value`` after it was built."""

    name = "lob"

    def __init__(self, field: str, value: Any) -> None:
        self.inner = signing_printers()["lob"]
        self.field, self.value = field, value

    def parse_webhook(self, envelope: WebhookEnvelope) -> list[StatusUpdate]:
        updates = self.inner.parse_webhook(envelope)
        for update in updates:
            if update.provider_event_id == "evt_poison":
                object.__setattr__(update, self.field, self.value)
        return updates

    def create_postcard(self, request: Any) -> Any:
        raise NotImplementedError

    def find_postcard(self, idempotency_key: str, recipient_id: int) -> Any:
        raise NotImplementedError

    def cancel_postcard(self, provider_piece_id: str) -> None:
        raise NotImplementedError


def poison_for(piece: str) -> str:
    return lob_message(lob_event("evt_poison", piece, "postcard.delivered"))


def test_a_statement_error_rolls_back_only_its_message(
    sessions: SessionFactory, queue: LocalQueue, clock: FakeClock, a_pass: Pass
) -> None:
    poison = poison_for("psc_good_0")
    queue.send_batch([poison, *a_pass.messages])
    naive = datetime(2025, 3, 1, 9, 0)  # the UTCDateTime column refuses naive times

    result = process_status_queue(sessions, queue, {"lob": Unchecked("occurred_at", naive)})

    reason = assert_only_the_poison_is_dead(result, queue, clock, a_pass, poison)
    assert reason == (
        "the status updates could not be applied: StatementError: naive datetimes are not "
        "stored; use datetime.now(UTC)"
    )
    assert result.messages_failed == 1


def test_an_integrity_error_rolls_back_only_its_message(
    sessions: SessionFactory,
    queue: LocalQueue,
    clock: FakeClock,
    a_pass: Pass,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real foreign-key violation from the database, on SQLite and PostgreSQL alike."""
    record = MailpieceStatusGateway.record_events

    def orphaned(self: MailpieceStatusGateway, events: Any) -> Any:
        events = [
            replace(e, mailpiece_id=987_654_321) if e.provider_event_id == "evt_poison" else e
            for e in events
        ]
        return record(self, events)

    monkeypatch.setattr(MailpieceStatusGateway, "record_events", orphaned)
    poison = poison_for("psc_good_0")
    queue.send_batch([*a_pass.messages[:15], poison, *a_pass.messages[15:]])

    result = process_status_queue(sessions, queue, signing_printers())

    reason = assert_only_the_poison_is_dead(result, queue, clock, a_pass, poison)
    assert reason.startswith("the status updates could not be applied: IntegrityError: ")
    assert "987654321" not in reason  # no values, only the driver's first line


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("provider_event_id", "e" * 201, "DataError: value too long for type character varying"),
        ("detail", "Refused\x00", "DataError: PostgreSQL text fields cannot contain NUL"),
    ],
)
def test_postgresql_refusing_a_value_rolls_back_only_its_message(
    field: str,
    value: str,
    expected: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    clock: FakeClock,
    a_pass: Pass,
) -> None:
    """With validation bypassed, PostgreSQL's own DataError (which aborts the transaction)
    is rolled back to the message's savepoint, and the rest of the pass commits."""
    poison = poison_for("psc_good_0")
    queue.send_batch([*a_pass.messages, poison])

    result = process_status_queue(sessions, queue, {"lob": Unchecked(field, value)})

    reason = assert_only_the_poison_is_dead(result, queue, clock, a_pass, poison)
    assert expected in reason


def test_a_lookup_that_fails_on_one_messages_value_fails_only_that_message(
    sessions: SessionFactory,
    queue: LocalQueue,
    clock: FakeClock,
    a_pass: Pass,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bulk lookup fails because of one key: each message then looks up its own pieces
    in its own savepoint, and only the message with that key fails."""
    find = MailpieceStatusGateway.find_pieces
    calls: list[int] = []

    def refusing(self: MailpieceStatusGateway, keys: Any) -> Any:
        keys = set(keys)
        calls.append(len(keys))
        if ("lob", "psc_good_0") in keys:
            raise sa.exc.DataError("SELECT", {}, Exception("invalid byte sequence"))
        return find(self, keys)

    monkeypatch.setattr(MailpieceStatusGateway, "find_pieces", refusing)
    poison = lob_message(lob_event("evt_good_0", "psc_good_0"))
    queue.send_batch([*a_pass.messages[1:], poison])

    result = process_status_queue(sessions, queue, signing_printers())

    assert calls[0] == GOOD  # one bulk lookup first
    assert result.received == GOOD
    assert result.updates_applied == GOOD - 1
    assert result.messages_deleted == GOOD - 1
    assert result.dead_letter_reasons == (
        "the status updates could not be applied: DataError: invalid byte sequence",
    )
    (dead,) = queue.dead_letters()
    assert dead.body == poison
    statuses = a_pass.statuses()
    assert statuses["psc_good_0"] == M.CREATED
    assert [statuses[f"psc_good_{i}"] for i in range(1, GOOD)] == [M.IN_TRANSIT] * (GOOD - 1)


def test_a_database_outage_dead_letters_nothing_and_everything_comes_back(
    db_url: str,
    sessions: SessionFactory,
    queue: LocalQueue,
    clock: FakeClock,
    a_pass: Pass,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An OperationalError inside one message's savepoint is not that message's fault."""
    record = MailpieceStatusGateway.record_events

    def connection_lost(self: MailpieceStatusGateway, events: Any) -> Any:
        if any(e.provider_event_id == "evt_good_20" for e in events):
            raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))
        return record(self, events)

    monkeypatch.setattr(MailpieceStatusGateway, "record_events", connection_lost)
    queue.send_batch(a_pass.messages)

    with pytest.raises(sa.exc.OperationalError):
        process_status_queue(sessions, queue, signing_printers())

    assert a_pass.events() == 0  # the messages before it were rolled back with the pass
    assert queue.dead_letters() == []
    clock.advance(VISIBILITY + 1)
    assert queue.approximate_depth() == GOOD
    monkeypatch.undo()
    again = process_status_queue(sessions, queue, signing_printers())
    assert (again.updates_applied, again.messages_deleted, again.dead_lettered) == (GOOD, GOOD, 0)


# -- messages apply in the order their events happened -------------------------------------


def test_messages_of_one_pass_apply_in_the_order_their_events_happened(
    db_url: str, sessions: SessionFactory, queue: LocalQueue, a_pass: Pass
) -> None:
    """``returned`` at 11:00 arrives before ``delivered`` at 10:00, in two messages of one
    pass: the piece ends delivered, as it would in any arrival order."""
    returned = lob_event(
        "evt_r", "psc_good_0", "postcard.returned_to_sender", "2025-03-01T11:00:00Z"
    )
    delivered = lob_event("evt_d", "psc_good_0", "postcard.delivered", "2025-03-01T10:00:00Z")
    queue.send_batch([lob_message(returned), lob_message(delivered)])

    result = process_status_queue(sessions, queue, signing_printers())

    assert (result.updates_applied, result.pieces_advanced) == (2, 1)
    assert result.recipients_received == 1
    with unit_of_work(db_url) as session:
        piece = session.execute(
            sa.select(Mailpiece).where(Mailpiece.provider_piece_id == "psc_good_0")
        ).scalar_one()
        assert piece.status == M.DELIVERED
        assert piece.delivered_at == datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
        assert piece.last_event_at == datetime(2025, 3, 1, 11, 0, tzinfo=UTC)
