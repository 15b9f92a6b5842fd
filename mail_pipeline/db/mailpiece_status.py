"""Printer status updates in SQL: find the mailpieces, record events, move pieces forward.

The status consumer (:mod:`mail_pipeline.services.status_tracking`) decides *what* moves;
this gateway owns *how*, inside the caller's session and transaction (it never commits):

- :meth:`MailpieceStatusGateway.find_pieces` looks every reported piece up in one query, by
  its natural key ``(printer, provider_piece_id)``. On PostgreSQL the rows are locked
  ``FOR UPDATE`` (in id order), so two consumers handling the same piece take turns and each
  reads what the other committed; SQLite runs one writer at a time already.
- :meth:`MailpieceStatusGateway.record_events` inserts the events with ``INSERT ... ON
  CONFLICT (printer, provider_event_id) DO NOTHING RETURNING``: a redelivered webhook is
  recorded once, even when two consumers insert it at the same moment, and the caller learns
  exactly which events are new.
- :meth:`MailpieceStatusGateway.advance` moves pieces with a guarded ``UPDATE ... WHERE
  status IN (<statuses the new one advances>)``, so a piece never moves backwards whatever
  the interleaving.
- :meth:`MailpieceStatusGateway.mark_received` moves delivered pieces' recipients Sent ->
  Received through :class:`~mail_pipeline.db.recipients.RecipientGateway` (a guarded
  transition), with ``received_at`` = the piece's ``delivered_at``;
  :meth:`MailpieceStatusGateway.mark_failed` moves failed or cancelled pieces' recipients
  Sent -> Error (``error_from_status`` Sent) with the printer's reason.
- :meth:`MailpieceStatusGateway.settle_sent` does either for recipients that became Sent
  after their piece was already delivered, failed or cancelled (the webhook was applied
  while the recipient was still Sending, and no later webhook would move it on).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, exists, func, literal, or_, select, update
from sqlalchemy.orm import Session, aliased

from mail_pipeline.db.engine import dialect_insert
from mail_pipeline.db.models import Mailpiece, MailpieceEvent, Recipient, utcnow
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.db.types import UTCDateTime
from mail_pipeline.domain.mailpieces import (
    DELIVERED_STATUSES,
    FAILED_STATUSES,
    MailpieceStatus,
    advances,
    failure_reason,
)
from mail_pipeline.domain.recipients import RecipientStatus

#: ``(printer, provider_piece_id)`` or ``(printer, provider_event_id)``.
Key = tuple[str, str]

#: Rows per INSERT statement (well under SQLite's 32,766 bound parameters).
_INSERT_CHUNK = 500


@dataclass(frozen=True)
class PieceState:
    """A mailpiece as the status consumer needs it."""

    id: int
    recipient_id: int
    printer: str
    provider_piece_id: str
    status: MailpieceStatus
    last_event_at: datetime | None


@dataclass(frozen=True)
class NewEvent:
    """One ``mailpiece_events`` row to record."""

    mailpiece_id: int
    printer: str
    provider_event_id: str
    status: MailpieceStatus
    occurred_at: datetime
    detail: str | None = None

    @property
    def key(self) -> Key:
        return (self.printer, self.provider_event_id)


@dataclass(frozen=True)
class PieceMove:
    """What a piece becomes: a new status (``None``: it keeps its own) and/or a later
    ``last_event_at``; ``delivered_at`` is set once, when a delivered status arrives."""

    mailpiece_id: int
    status: MailpieceStatus | None
    last_event_at: datetime
    delivered_at: datetime | None = None


@dataclass(frozen=True)
class AdvancedPiece:
    id: int
    recipient_id: int
    status: MailpieceStatus


@dataclass(frozen=True)
class SettledRecipients:
    """What :meth:`MailpieceStatusGateway.settle_sent` did with just-Sent recipients."""

    received: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()


def statuses_advanced_by(new: MailpieceStatus) -> list[MailpieceStatus]:
    """Every status that ``new`` moves a piece forward from (the guard of an advance)."""
    return [current for current in MailpieceStatus if advances(current, new)]


class MailpieceStatusGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def _dialect(self) -> str:
        return self.session.get_bind().dialect.name

    def find_pieces(self, keys: Iterable[Key]) -> dict[Key, PieceState]:
        """The mailpieces with these ``(printer, provider_piece_id)`` keys, in one query,
        locked for this transaction on PostgreSQL. Keys with no piece are absent."""
        by_printer: dict[str, set[str]] = defaultdict(set)
        for printer, piece_id in keys:
            by_printer[printer].add(piece_id)
        if not by_printer:
            return {}
        stmt = (
            select(
                Mailpiece.id,
                Mailpiece.recipient_id,
                Mailpiece.printer,
                Mailpiece.provider_piece_id,
                Mailpiece.status,
                Mailpiece.last_event_at,
            )
            .where(
                or_(
                    *(
                        and_(Mailpiece.printer == printer, Mailpiece.provider_piece_id.in_(ids))
                        for printer, ids in sorted(by_printer.items())
                    )
                )
            )
            .order_by(Mailpiece.id)
            .with_for_update(of=Mailpiece)
        )
        found: dict[Key, PieceState] = {}
        for row in self.session.execute(stmt):
            piece = PieceState(
                id=row.id,
                recipient_id=row.recipient_id,
                printer=row.printer,
                provider_piece_id=row.provider_piece_id,
                status=MailpieceStatus(row.status),
                last_event_at=row.last_event_at,
            )
            found[(piece.printer, piece.provider_piece_id)] = piece
        return found

    def record_events(self, events: Sequence[NewEvent]) -> set[Key]:
        """Insert the events not recorded yet; return the ``(printer, provider_event_id)``
        keys actually inserted (an event already there, or inserted concurrently by another
        consumer, is skipped, never an error)."""
        inserted: set[Key] = set()
        rows = [
            {
                "mailpiece_id": e.mailpiece_id,
                "printer": e.printer,
                "provider_event_id": e.provider_event_id,
                "status": e.status,
                "occurred_at": e.occurred_at,
                "detail": e.detail,
                "created_at": utcnow(),
            }
            for e in events
        ]
        # An executemany (sent as multi-row INSERTs of at most _INSERT_CHUNK rows): compiled
        # once per process, where a multi-VALUES statement is compiled per call.
        table = MailpieceEvent.__table__
        stmt = (
            dialect_insert(self.session)(table)
            .on_conflict_do_nothing(index_elements=[table.c.printer, table.c.provider_event_id])
            .returning(table.c.printer, table.c.provider_event_id)
        )
        for start in range(0, len(rows), _INSERT_CHUNK):
            part = rows[start : start + _INSERT_CHUNK]
            inserted.update(
                (printer, event_id)
                for printer, event_id in self.session.connection().execute(stmt, part)
            )
        return inserted

    def advance(
        self, moves: Sequence[PieceMove], *, now: datetime | None = None
    ) -> list[AdvancedPiece]:
        """Apply the moves; return the pieces whose status changed.

        Status changes go one statement per target status, guarded so that only a piece in a
        status the target advances moves (a concurrent later status wins). Moves without a
        new status only bring ``last_event_at`` forward.
        """
        now = now or utcnow()
        advanced: list[AdvancedPiece] = []
        by_status: dict[MailpieceStatus, list[PieceMove]] = defaultdict(list)
        touched: list[PieceMove] = []
        for move in moves:
            if move.status is None:
                touched.append(move)
            else:
                by_status[move.status].append(move)
        for status, group in sorted(by_status.items()):
            ids = [m.mailpiece_id for m in group]
            values: dict[str, Any] = {
                "status": status,
                "updated_at": now,
                "last_event_at": _per_piece(group, "last_event_at"),
            }
            if status in DELIVERED_STATUSES:
                values["delivered_at"] = func.coalesce(
                    Mailpiece.delivered_at, _per_piece(group, "delivered_at")
                )
            stmt = (
                update(Mailpiece)
                .where(Mailpiece.id.in_(ids), Mailpiece.status.in_(statuses_advanced_by(status)))
                .values(values)
                .returning(Mailpiece.id, Mailpiece.recipient_id)
            )
            rows = self.session.execute(stmt, execution_options={"synchronize_session": False})
            advanced += [AdvancedPiece(row.id, row.recipient_id, status) for row in rows]
        if touched:
            later = _per_piece(touched, "last_event_at")
            touch = (
                update(Mailpiece)
                .where(
                    Mailpiece.id.in_([m.mailpiece_id for m in touched]),
                    or_(Mailpiece.last_event_at.is_(None), Mailpiece.last_event_at < later),
                )
                .values(last_event_at=later, updated_at=now)
            )
            self.session.execute(touch, execution_options={"synchronize_session": False})
        return sorted(advanced, key=lambda p: p.id)

    def mark_received(
        self, recipient_ids: Iterable[int], *, now: datetime | None = None
    ) -> list[int]:
        """Move these recipients Sent -> Received (those still Sent); ``received_at`` is
        their mailpiece's ``delivered_at``. Returns the recipients moved."""
        now = now or utcnow()
        delivered_at = (
            select(Mailpiece.delivered_at)
            .where(Mailpiece.recipient_id == Recipient.id)
            .order_by(Mailpiece.attempt.desc())
            .limit(1)
            .scalar_subquery()
        )
        return RecipientGateway(self.session).transition_many(
            recipient_ids,
            RecipientStatus.SENT,
            RecipientStatus.RECEIVED,
            now=now,
            values={"received_at": func.coalesce(delivered_at, now)},
        )

    def mark_failed(self, reasons: Mapping[int, str], *, now: datetime | None = None) -> list[int]:
        """Move these recipients Sent -> Error (those still Sent), each with its reason;
        ``error_from_status`` = Sent, so an operator retry starts it again at proofing.
        Returns the recipients moved."""
        return RecipientGateway(self.session).mark_errors(
            reasons, RecipientStatus.SENT, now=now or utcnow()
        )

    def settle_sent(
        self, recipient_ids: Iterable[int], *, now: datetime | None = None
    ) -> SettledRecipients:
        """Settle recipients the mailing run just marked Sent whose piece already reached the
        end: delivered -> Received, failed or cancelled -> Error with the printer's reason
        (from the earliest recorded event of that status, whose printer-side status name
        is not kept, so the reason reads ``lob reported the mailpiece failed: <detail>``).

        The status webhook may have been applied while the recipient was still Sending (the
        printer's id is recorded before the follow-ups run); the guarded moves of the status
        consumer skipped it then, and no later webhook would move it on."""
        ids = list(recipient_ids)
        if not ids:
            return SettledRecipients()
        now = now or utcnow()
        ended = self.session.execute(
            select(Mailpiece.id, Mailpiece.recipient_id, Mailpiece.printer, Mailpiece.status)
            .where(
                Mailpiece.recipient_id.in_(ids),
                Mailpiece.status.in_(DELIVERED_STATUSES | FAILED_STATUSES),
                _latest_attempt(),
            )
            .order_by(Mailpiece.id)
        ).all()
        received = self.mark_received(
            [row.recipient_id for row in ended if row.status in DELIVERED_STATUSES], now=now
        )
        reasons = {
            row.recipient_id: failure_reason(
                row.printer,
                f"the mailpiece {MailpieceStatus(row.status)}",
                self._first_detail(row.id, MailpieceStatus(row.status)),
            )
            for row in ended
            if row.status in FAILED_STATUSES
        }
        failed = self.mark_failed(reasons, now=now)
        return SettledRecipients(received=tuple(received), failed=tuple(failed))

    def _first_detail(self, mailpiece_id: int, status: MailpieceStatus) -> str | None:
        """The detail of the piece's earliest recorded event of ``status``."""
        return self.session.scalar(
            select(MailpieceEvent.detail)
            .where(MailpieceEvent.mailpiece_id == mailpiece_id, MailpieceEvent.status == status)
            .order_by(MailpieceEvent.occurred_at, MailpieceEvent.id)
            .limit(1)
        )


def _latest_attempt() -> Any:
    """The piece is its recipient's latest print attempt (an earlier one is dead: a failed
    or cancelled piece an operator retried; it says nothing about the recipient now)."""
    later = aliased(Mailpiece)
    return ~exists().where(
        later.recipient_id == Mailpiece.recipient_id, later.attempt > Mailpiece.attempt
    )


def _per_piece(moves: Sequence[PieceMove], attribute: str) -> Any:
    """``CASE mailpieces.id WHEN <id> THEN <time> ... END`` for a time attribute of the moves."""
    return case(
        {m.mailpiece_id: literal(getattr(m, attribute), UTCDateTime()) for m in moves},
        value=Mailpiece.id,
    )
