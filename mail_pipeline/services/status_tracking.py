"""Status tracking (seed 001 §5): printer webhooks move mailpieces along, and a delivered
postcard moves its recipient Sent -> Received.

The webhook ingress puts each printer webhook, untouched, on the status queue (see
:mod:`mail_pipeline.integrations.printers.webhooks`). :func:`process_status_queue` is one
pass over that queue:

1. receive up to ``max_receives`` x 10 messages (stopping at the first empty receive);
2. parse each with :func:`parse_envelope`; a message that cannot be parsed or verified will
   never parse, so it goes to the dead-letter queue at once, with the reason;
3. apply every parsed update in **one** transaction (:func:`apply_status_updates`): events are
   recorded once per ``(printer, provider_event_id)``, pieces only ever move forward
   (:func:`~mail_pipeline.domain.mailpieces.advances`), and a piece reaching a delivered
   status moves its recipient Sent -> Received (a guarded transition);
4. after the commit, and only then, delete the messages that were fully applied, in one
   batched ``delete``.

Rules the seed leaves open, decided here:

- A webhook about a mailpiece that is not in the database is **kept** (not deleted): the
  printer can report a piece before the mailing run has recorded its provider id. The
  message comes back after the visibility timeout; the queue's redrive policy moves it to the
  DLQ once it has been received ``max_receive_count`` times. Its other updates, about known
  pieces, are applied meanwhile (applying them again later is a no-op).
- Out-of-order events are recorded but never move a piece backwards; the updates of one
  piece in one pass are applied in the order they happened (``delivered`` at 10:00 wins over
  ``returned`` at 11:00; a piece in a final status stays there).
- ``last_event_at`` is the time of the latest event heard about the piece; ``delivered_at``
  and the recipient's ``received_at`` are the time the printer says it was delivered.
- A returned, cancelled or failed piece leaves its recipient in Sent.

Idempotency: every step is safe to repeat. If the transaction fails nothing is deleted and
every message comes back; if a delete fails the message comes back and re-applying it
changes nothing (its events are already recorded).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.mailpiece_status import (
    Key,
    MailpieceStatusGateway,
    NewEvent,
    PieceMove,
    PieceState,
)
from mail_pipeline.db.models import utcnow
from mail_pipeline.domain.mailpieces import DELIVERED_STATUSES, RANK, advances
from mail_pipeline.integrations.printers.base import MalformedWebhook, Printer, StatusUpdate
from mail_pipeline.integrations.printers.webhooks import parse_envelope
from mail_pipeline.integrations.queues.base import MessageQueue, QueueMessage
from mail_pipeline.services.draining import dead_letter, delete_processed, receive_pages

logger = logging.getLogger(__name__)

#: At most this many dead-letter reasons are kept in a result (the count is always exact).
MAX_REASONS = 20


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
    dead_lettered: int = 0
    #: Why messages went to the DLQ (the first :data:`MAX_REASONS`).
    dead_letter_reasons: tuple[str, ...] = ()
    #: Messages that could not be parsed and could not be moved to the DLQ either; they come
    #: back after the visibility timeout.
    dead_letter_failures: int = 0
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
    pieces_advanced: int = 0
    recipients_received: int = 0
    #: ``(printer, provider_piece_id)`` of updates whose piece is not in the database.
    unknown_pieces: frozenset[Key] = frozenset()


def process_status_queue(
    sessions: SessionFactory,
    queue: MessageQueue,
    printers: Mapping[str, Printer],
    *,
    max_receives: int = 5,
    visibility_timeout: int = 120,
    log: logging.Logger = logger,
) -> StatusRunResult:
    """One pass over the status queue: receive, parse, apply in one transaction, delete.

    A database failure propagates after nothing was deleted (every message comes back).
    """
    messages = receive_pages(queue, max_receives, visibility_timeout)
    parsed: list[tuple[QueueMessage, list[StatusUpdate]]] = []
    reasons: list[str] = []
    dead_lettered = dead_letter_failures = 0
    for message in messages:
        try:
            parsed.append((message, parse_envelope(message.body, printers)))
        except (ValueError, TypeError, KeyError) as exc:
            reason = _unparseable_reason(exc)
            if dead_letter(queue, message, reason, log, "status"):
                dead_lettered += 1
                if len(reasons) < MAX_REASONS:
                    reasons.append(reason)
            else:
                dead_letter_failures += 1

    applied = apply_status_updates(sessions, [u for _, updates in parsed for u in updates])

    done: list[QueueMessage] = []
    retained = 0
    for message, updates in parsed:
        unknown = sorted({_piece_key(u) for u in updates} & applied.unknown_pieces)
        if unknown:
            retained += 1
            log.info(
                "status message %s (received %s times) names pieces not recorded yet, %s; "
                "kept for redelivery",
                message.message_id,
                message.receive_count,
                ", ".join(f"{printer}:{piece}" for printer, piece in unknown),
            )
        else:
            done.append(message)
    delete_failures = delete_processed(queue, done, log, "status")

    result = StatusRunResult(
        received=len(messages),
        updates_applied=applied.events_recorded,
        events_duplicated=applied.events_duplicated,
        pieces_advanced=applied.pieces_advanced,
        recipients_received=applied.recipients_received,
        dead_lettered=dead_lettered,
        dead_letter_reasons=tuple(reasons),
        dead_letter_failures=dead_letter_failures,
        unknown_pieces=len(applied.unknown_pieces),
        messages_retained=retained,
        messages_deleted=len(done) - delete_failures,
        delete_failures=delete_failures,
    )
    if messages:
        log.info(
            "status queue %s: %s received, %s updates applied, %s duplicates, %s pieces "
            "advanced, %s recipients received, %s dead-lettered, %s kept for unknown pieces",
            queue.name,
            result.received,
            result.updates_applied,
            result.events_duplicated,
            result.pieces_advanced,
            result.recipients_received,
            result.dead_lettered,
            result.messages_retained,
        )
    return result


def apply_status_updates(
    sessions: SessionFactory, updates: Sequence[StatusUpdate], *, now: datetime | None = None
) -> AppliedUpdates:
    """Apply status updates in one transaction; idempotent (see the module docstring)."""
    if not updates:
        return AppliedUpdates()
    now = now or utcnow()
    with sessions() as session:
        gateway = MailpieceStatusGateway(session)
        pieces = gateway.find_pieces({_piece_key(u) for u in updates})
        known = sorted(
            (u for u in updates if _piece_key(u) in pieces),
            key=lambda u: (u.occurred_at, RANK[u.status]),
        )
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
        advanced = gateway.advance(plan_moves(pieces, new), now=now)
        received = gateway.mark_received(
            [p.recipient_id for p in advanced if p.status in DELIVERED_STATUSES], now=now
        )
    return AppliedUpdates(
        events_recorded=len(new),
        events_duplicated=len(known) - len(new),
        pieces_advanced=len(advanced),
        recipients_received=len(received),
        unknown_pieces=frozenset({_piece_key(u) for u in updates} - pieces.keys()),
    )


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
        for update in sorted(piece_updates, key=lambda u: (u.occurred_at, RANK[u.status])):
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


def _unparseable_reason(exc: Exception) -> str:
    if isinstance(exc, MalformedWebhook):
        return str(exc)
    return f"the status message could not be parsed: {type(exc).__name__}: {exc}"
