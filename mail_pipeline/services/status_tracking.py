"""Status tracking (seed 001 §5): printer webhooks move mailpieces along; a delivered
postcard moves its recipient Sent -> Received, a failed or cancelled one Sent -> Error.

The webhook ingress puts each printer webhook, untouched, on the status queue (see
:mod:`mail_pipeline.integrations.printers.webhooks`). :func:`process_status_queue` is one
pass over that queue, built so that one poison message harms only itself:

1. receive up to ``max_receives`` x 10 messages (stopping at the first empty receive);
2. parse each with :func:`parse_envelope` into :class:`StatusUpdate` values, which check
   themselves against the columns they are stored in (lengths, characters PostgreSQL
   refuses, an event time inside the accepted window; see
   :mod:`mail_pipeline.domain.mailpieces`). A message that cannot be parsed, verified or
   validated will never be, so it goes to the dead-letter queue at once, with the reason;
3. apply the parsed messages in **one** transaction (:func:`apply_status_updates`), each
   message in **its own savepoint**: the pieces of the whole pass are looked up in bulk
   first (locked ``FOR UPDATE`` in id order on PostgreSQL), then every message records its
   events once per ``(printer, provider_event_id)``, moves its pieces forward only
   (:func:`~mail_pipeline.domain.mailpieces.advances`), and moves recipients Sent ->
   Received (delivered) or Sent -> Error (failed, cancelled). Any failure of one message -
   whatever the exception, a database ``DataError`` or ``IntegrityError`` included - rolls
   back its savepoint alone; the others are applied;
4. after the commit, and only then: the messages whose savepoint failed go to the DLQ, each
   with a reason a person can read (the exception type and the first line of its message,
   no SQL, no values), and the messages fully applied are deleted in one batched
   ``delete``.

A failure that is not a message's fault - the database is away (``OperationalError`` or
``InterfaceError``, on a statement, a savepoint or the commit; see
:func:`mail_pipeline.db.errors.is_outage`) - propagates: nothing is dead-lettered for it,
nothing is deleted, and every message comes back after the visibility timeout.

Rules the seed leaves open, decided here:

- A webhook about a mailpiece that is not in the database is **kept** (not deleted): the
  printer can report a piece before the mailing run has recorded its provider id. The
  message comes back after the visibility timeout; on its last delivery before the redrive
  policy would move it (``receive_count >= max_receive_count``, the queues'
  :data:`~mail_pipeline.integrations.queues.base.MAX_RECEIVE_COUNT`) it is dead-lettered
  here, with the reason ``unknown piece <id> after <n> deliveries``
  (:func:`unknown_piece_dead_letter_reason`), rather than moved silently by the redrive.
  Its other updates, about known pieces, are applied meanwhile (applying them again later
  is a no-op).
- Out-of-order events are recorded but never move a piece backwards. Messages are applied in
  the order of their earliest event, and the updates of one piece in one message in the
  order they happened, so within a pass a piece's updates apply in time order
  (``delivered`` at 10:00 wins over ``returned`` at 11:00; a piece in a final status stays
  there). The one exception: two multi-piece (Stannp) messages whose pieces' times
  interleave; the message with the earlier first event is applied first.
- ``last_event_at`` is the time of the latest event heard about the piece; ``delivered_at``
  and the recipient's ``received_at`` are the time the printer says it was delivered.
- A failed or cancelled piece (Lob ``postcard.failed`` / ``postcard.rejected`` /
  ``postcard.deleted``, Stannp ``cancelled``, IntelliPrint ``failed_wrong_address`` /
  ``cancelled``) moves its recipient Sent -> Error, ``error_from_status`` Sent, with the
  reason ``<printer> reported <printer's status>[: <printer's detail>]``: nothing will be
  delivered, so the recipient must not look Sent. A recipient still Sending then is moved
  by the mailing run when it marks it Sent
  (:meth:`~mail_pipeline.db.mailpiece_status.MailpieceStatusGateway.settle_sent`).
- A returned piece leaves its recipient in Sent (it was mailed; see docs/decisions.md).
- A message bound for the dead-letter queue leaves the status queue only by its move there.
  While the DLQ cannot take it (SQS refusing the send after the client's retries, the local
  queue's file locked past its busy timeout) it is not deleted: it stays, an error is logged
  with the cause, ``dead_letter_failures`` counts it, and it comes back after the visibility
  timeout, to be moved once the DLQ is back (or by the redrive policy after
  ``max_receive_count`` deliveries). The rest of the pass is applied and deleted as usual.

Idempotency: every step is safe to repeat. If the transaction fails nothing is deleted and
every message comes back; if a delete fails the message comes back and re-applying it
changes nothing (its events are already recorded).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy.orm import Session

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.errors import describe, is_outage
from mail_pipeline.db.mailpiece_status import (
    AdvancedPiece,
    Key,
    MailpieceStatusGateway,
    NewEvent,
    PieceMove,
    PieceState,
)
from mail_pipeline.db.models import utcnow
from mail_pipeline.domain.mailpieces import (
    DELIVERED_STATUSES,
    FAILED_STATUSES,
    RANK,
    advances,
    failure_reason,
)
from mail_pipeline.failpoints import failpoint
from mail_pipeline.integrations.printers.base import MalformedWebhook, Printer, StatusUpdate
from mail_pipeline.integrations.printers.webhooks import parse_envelope
from mail_pipeline.integrations.queues.base import MAX_RECEIVE_COUNT, MessageQueue, QueueMessage
from mail_pipeline.services.draining import dead_letter, delete_processed, receive_pages

logger = logging.getLogger(__name__)

#: At most this many dead-letter reasons are kept in a result (the count is always exact).
MAX_REASONS = 20
#: At most this many unknown piece ids are named in one dead-letter reason.
MAX_NAMED_PIECES = 5


@dataclass(frozen=True)
class StatusRunResult:
    """What one pass over the status queue did."""

    received: int = 0
    #: Events recorded for the first time (each one a status update applied).
    updates_applied: int = 0
    #: Updates whose event was already recorded (a redelivered webhook): no change.
    events_duplicated: int = 0
    pieces_advanced: int = 0
    recipients_received: int = 0
    #: Recipients moved Sent -> Error because the printer failed or cancelled their piece.
    recipients_failed: int = 0
    #: Messages moved to the DLQ: unparseable, failed to apply, or unknown piece for good.
    dead_lettered: int = 0
    #: Why messages went to the DLQ (the first :data:`MAX_REASONS`).
    dead_letter_reasons: tuple[str, ...] = ()
    #: Messages that should have gone to the DLQ but could not be moved there; they come
    #: back after the visibility timeout.
    dead_letter_failures: int = 0
    #: Messages whose updates failed to apply: their savepoint was rolled back alone and
    #: they were sent to the DLQ (counted in ``dead_lettered`` too, when that worked).
    messages_failed: int = 0
    #: Distinct ``(printer, provider_piece_id)`` reported but not in the database.
    unknown_pieces: int = 0
    #: Messages left on the queue for redelivery because they name an unknown piece.
    messages_retained: int = 0
    messages_deleted: int = 0
    delete_failures: int = 0


@dataclass(frozen=True)
class AppliedUpdates:
    """What one transaction of status updates changed."""

    events_recorded: int = 0
    events_duplicated: int = 0
    #: Distinct pieces whose status changed (however many times in the pass).
    pieces_advanced: int = 0
    recipients_received: int = 0
    recipients_failed: int = 0
    #: ``(printer, provider_piece_id)`` of updates whose piece is not in the database.
    unknown_pieces: frozenset[Key] = frozenset()
    #: Index of a message (in the order given) whose savepoint was rolled back -> why.
    failures: Mapping[int, str] = field(default_factory=dict)


def process_status_queue(
    sessions: SessionFactory,
    queue: MessageQueue,
    printers: Mapping[str, Printer],
    *,
    max_receives: int = 5,
    visibility_timeout: int = 120,
    max_receive_count: int = MAX_RECEIVE_COUNT,
    log: logging.Logger = logger,
) -> StatusRunResult:
    """One pass over the status queue: receive, parse, apply message by message in one
    transaction, then dead-letter what failed and delete what was applied.

    ``max_receive_count`` is the queue's redrive setting: a message kept for an unknown piece
    is dead-lettered on that delivery. A database outage propagates after nothing was
    deleted or dead-lettered for it (every message comes back).
    """
    messages = receive_pages(queue, max_receives, visibility_timeout, log)
    dead = _DeadLetters(queue, log)
    parsed: list[tuple[QueueMessage, list[StatusUpdate]]] = []
    for message in messages:
        try:
            parsed.append((message, parse_envelope(message.body, printers)))
        except Exception as exc:  # noqa: BLE001 - whatever a message holds harms only itself
            dead.send(message, unparseable_reason(exc))

    applied = apply_status_updates(sessions, [updates for _, updates in parsed], log=log)

    done: list[QueueMessage] = []
    retained = 0
    for index, (message, updates) in enumerate(parsed):
        failure = applied.failures.get(index)
        if failure is not None:
            dead.send(message, failure)
            continue
        unknown = sorted({_piece_key(u) for u in updates} & applied.unknown_pieces)
        if not unknown:
            done.append(message)
            continue
        reason = unknown_piece_dead_letter_reason(unknown, message.receive_count, max_receive_count)
        if reason is not None:
            dead.send(message, reason)
            continue
        retained += 1
        log.info(
            "status message %s (received %s times) names pieces not recorded yet, %s; "
            "kept for redelivery",
            message.message_id,
            message.receive_count,
            ", ".join(f"{printer}:{piece}" for printer, piece in unknown[:MAX_NAMED_PIECES]),
        )
    if done:
        failpoint("status.applied")
    delete_failures = delete_processed(queue, done, log, "status")

    result = StatusRunResult(
        received=len(messages),
        updates_applied=applied.events_recorded,
        events_duplicated=applied.events_duplicated,
        pieces_advanced=applied.pieces_advanced,
        recipients_received=applied.recipients_received,
        recipients_failed=applied.recipients_failed,
        dead_lettered=dead.sent,
        dead_letter_reasons=tuple(dead.reasons),
        dead_letter_failures=dead.failed,
        messages_failed=len(applied.failures),
        unknown_pieces=len(applied.unknown_pieces),
        messages_retained=retained,
        messages_deleted=len(done) - delete_failures,
        delete_failures=delete_failures,
    )
    if messages:
        log.info(
            "status queue %s: %s received, %s updates applied, %s duplicates, %s pieces "
            "advanced, %s recipients received, %s recipients failed, %s dead-lettered "
            "(%s failed to apply), %s kept for unknown pieces",
            queue.name,
            result.received,
            result.updates_applied,
            result.events_duplicated,
            result.pieces_advanced,
            result.recipients_received,
            result.recipients_failed,
            result.dead_lettered,
            result.messages_failed,
            result.messages_retained,
        )
    return result


def unknown_piece_dead_letter_reason(
    unknown: Sequence[Key], receive_count: int, max_receive_count: int
) -> str | None:
    """Whether a message naming pieces not in the database goes to the DLQ now: ``None``
    (keep it for redelivery) until its last delivery before the redrive policy would move
    it (``receive_count >= max_receive_count``); then the reason, naming the pieces."""
    if not unknown or receive_count < max_receive_count:
        return None
    pieces = [piece for _, piece in unknown]
    named = ", ".join(pieces[:MAX_NAMED_PIECES])
    if len(pieces) > MAX_NAMED_PIECES:
        named += f" and {len(pieces) - MAX_NAMED_PIECES} more"
    noun = "piece" if len(pieces) == 1 else "pieces"
    return f"unknown {noun} {named} after {receive_count} deliveries"


def unparseable_reason(exc: Exception) -> str:
    """The dead-letter reason of a message that could not be parsed."""
    if isinstance(exc, MalformedWebhook):
        return str(exc)
    return f"the status message could not be parsed: {describe(exc)}"


def apply_status_updates(
    sessions: SessionFactory,
    messages: Sequence[Sequence[StatusUpdate]],
    *,
    now: datetime | None = None,
    log: logging.Logger = logger,
) -> AppliedUpdates:
    """Apply the updates of each message in its own savepoint of one transaction.

    A message whose savepoint fails (for any reason but a database outage) is rolled back
    alone and reported in ``failures``; an outage propagates and the transaction is rolled
    back. Idempotent (see the module docstring).
    """
    failures: dict[int, str] = {}
    keys_of: dict[int, set[Key]] = {}
    first_event: dict[int, tuple[float, int]] = {}
    for index, updates in enumerate(messages):
        if not updates:
            continue
        try:
            keys_of[index] = _keys_of(updates)
            first_event[index] = min(_time_order_key(u) for u in updates)
        except Exception as exc:  # noqa: BLE001 - a value no update holds: the message fails
            failures[index] = _failure(exc)
    keys = set().union(*keys_of.values())
    if not keys:
        return AppliedUpdates(failures=failures)
    now = now or utcnow()
    totals = _Totals()
    with sessions() as session:
        gateway = MailpieceStatusGateway(session)
        pieces = _find_in_bulk(session, gateway, keys, log)
        # By their earliest event; a stable sort keeps arrival order among equals.
        for index in sorted(first_event, key=first_event.__getitem__):
            try:
                with session.begin_nested():
                    found = (
                        {k: pieces[k] for k in keys_of[index] if k in pieces}
                        if pieces is not None
                        else gateway.find_pieces(keys_of[index])
                    )
                    outcome = _apply_message(gateway, found, messages[index], now)
            except Exception as exc:  # any failure of a message is its own, but an outage
                if is_outage(exc):
                    raise
                failures[index] = _failure(exc)
                continue
            totals.add(outcome)
            if pieces is not None:
                pieces.update(outcome.pieces_after)
        if totals.recorded:
            failpoint("status.applying")
    return AppliedUpdates(
        events_recorded=totals.recorded,
        events_duplicated=totals.duplicated,
        pieces_advanced=len(totals.advanced),
        recipients_received=totals.received,
        recipients_failed=totals.failed,
        unknown_pieces=frozenset(totals.unknown),
        failures=failures,
    )


@dataclass(frozen=True)
class _MessageOutcome:
    recorded: int = 0
    duplicated: int = 0
    #: Ids of the pieces whose status changed.
    advanced: frozenset[int] = frozenset()
    received: int = 0
    failed: int = 0
    unknown: frozenset[Key] = frozenset()
    #: The message's pieces as they are after it (for the next messages of the pass).
    pieces_after: Mapping[Key, PieceState] = field(default_factory=dict)


@dataclass
class _Totals:
    recorded: int = 0
    duplicated: int = 0
    advanced: set[int] = field(default_factory=set)
    received: int = 0
    failed: int = 0
    unknown: set[Key] = field(default_factory=set)

    def add(self, outcome: _MessageOutcome) -> None:
        self.recorded += outcome.recorded
        self.duplicated += outcome.duplicated
        self.advanced |= outcome.advanced
        self.received += outcome.received
        self.failed += outcome.failed
        self.unknown |= outcome.unknown


def _find_in_bulk(
    session: Session, gateway: MailpieceStatusGateway, keys: set[Key], log: logging.Logger
) -> dict[Key, PieceState] | None:
    """Every piece of the pass in one locking query (in id order, so concurrent consumers
    never deadlock). Should that query fail because of a value (not an outage), ``None``:
    each message then looks its own pieces up in its own savepoint, so the value fails only
    the message that carries it."""
    try:
        with session.begin_nested():
            return gateway.find_pieces(keys)
    except Exception as exc:  # narrowed below to the message that caused it
        if is_outage(exc):
            raise
        log.warning(
            "status pieces not looked up in bulk (%s); one message at a time", describe(exc)
        )
        return None


def _apply_message(
    gateway: MailpieceStatusGateway,
    pieces: Mapping[Key, PieceState],
    updates: Sequence[StatusUpdate],
    now: datetime,
) -> _MessageOutcome:
    """Record one message's events and move its pieces and their recipients."""
    unknown = frozenset(_keys_of(updates) - pieces.keys())
    known = sorted((u for u in updates if _piece_key(u) in pieces), key=_time_order)
    if not known:
        return _MessageOutcome(unknown=unknown)
    first_of_event: dict[Key, StatusUpdate] = {}
    for update in known:
        first_of_event.setdefault((update.printer, update.provider_event_id), update)
    recorded = gateway.record_events(
        [
            NewEvent(
                mailpiece_id=pieces[_piece_key(u)].id,
                printer=u.printer,
                provider_event_id=u.provider_event_id,
                status=u.status,
                occurred_at=u.occurred_at,
                detail=u.detail,
            )
            for u in first_of_event.values()
        ]
    )
    new = [u for key, u in first_of_event.items() if key in recorded]
    moves = plan_moves(pieces, new)
    advanced = gateway.advance(moves, now=now)
    received = gateway.mark_received(
        [p.recipient_id for p in advanced if p.status in DELIVERED_STATUSES], now=now
    )
    failed = gateway.mark_failed(_failure_reasons(pieces, advanced, new), now=now)
    return _MessageOutcome(
        recorded=len(new),
        duplicated=len(known) - len(new),
        advanced=frozenset(p.id for p in advanced),
        received=len(received),
        failed=len(failed),
        unknown=unknown,
        pieces_after=_pieces_after(pieces, moves, advanced),
    )


def _failure_reasons(
    pieces: Mapping[Key, PieceState], advanced: Sequence[AdvancedPiece], new: Sequence[StatusUpdate]
) -> dict[int, str]:
    """Recipient id -> reason, for pieces that just became failed or cancelled: the
    printer's own status name and detail of the earliest update that reported it."""
    by_id = {piece.id: key for key, piece in pieces.items()}
    reasons: dict[int, str] = {}
    for piece in advanced:
        if piece.status not in FAILED_STATUSES:
            continue
        update = min(
            (u for u in new if _piece_key(u) == by_id[piece.id] and u.status == piece.status),
            key=_time_order,
        )
        reported = update.provider_status or f"the mailpiece {update.status}"
        reasons[piece.recipient_id] = failure_reason(update.printer, reported, update.detail)
    return reasons


def _pieces_after(
    pieces: Mapping[Key, PieceState], moves: Sequence[PieceMove], advanced: Sequence[AdvancedPiece]
) -> dict[Key, PieceState]:
    by_id = {piece.id: key for key, piece in pieces.items()}
    moved = {piece.id: piece.status for piece in advanced}
    after: dict[Key, PieceState] = {}
    for move in moves:
        key = by_id[move.mailpiece_id]
        piece = pieces[key]
        after[key] = replace(
            piece,
            status=moved.get(piece.id, piece.status),
            last_event_at=move.last_event_at,
        )
    return after


def _time_order(update: StatusUpdate) -> tuple[datetime, int]:
    return (update.occurred_at, RANK[update.status])


def _time_order_key(update: StatusUpdate) -> tuple[float, int]:
    """:func:`_time_order` as numbers, which compare across messages whatever they hold."""
    return (update.occurred_at.timestamp(), RANK[update.status])


def _failure(exc: Exception) -> str:
    return f"the status updates could not be applied: {describe(exc)}"


def _keys_of(updates: Iterable[StatusUpdate]) -> set[Key]:
    return {_piece_key(u) for u in updates}


class _DeadLetters:
    """Moves messages to the DLQ and keeps the counts and the first reasons."""

    def __init__(self, queue: MessageQueue, log: logging.Logger) -> None:
        self.queue = queue
        self.log = log
        self.sent = 0
        self.failed = 0
        self.reasons: list[str] = []

    def send(self, message: QueueMessage, reason: str) -> None:
        if dead_letter(self.queue, message, reason, self.log, "status"):
            self.sent += 1
            if len(self.reasons) < MAX_REASONS:
                self.reasons.append(reason)
        else:
            self.failed += 1


def plan_moves(
    pieces: Mapping[Key, PieceState], updates: Iterable[StatusUpdate]
) -> list[PieceMove]:
    """What the new updates make of each piece: its updates folded in the order they
    happened, keeping only the ones that move it forward; ``last_event_at`` is the latest
    event time known. Pieces that change in nothing get no move."""
    by_piece: dict[Key, list[StatusUpdate]] = defaultdict(list)
    for update in updates:
        by_piece[_piece_key(update)].append(update)
    moves: list[PieceMove] = []
    for key, piece_updates in by_piece.items():
        piece = pieces[key]
        status = piece.status
        delivered_at: datetime | None = None
        for update in sorted(piece_updates, key=_time_order):
            if advances(status, update.status):
                status = update.status
                if status in DELIVERED_STATUSES:
                    delivered_at = update.occurred_at
        latest = max(u.occurred_at for u in piece_updates)
        if piece.last_event_at is not None:
            latest = max(latest, piece.last_event_at)
        if status == piece.status and latest == piece.last_event_at:
            continue
        moves.append(
            PieceMove(
                mailpiece_id=piece.id,
                status=status if status != piece.status else None,
                last_event_at=latest,
                delivered_at=delivered_at,
            )
        )
    return moves


def _piece_key(update: StatusUpdate) -> Key:
    return (update.printer, update.provider_piece_id)
