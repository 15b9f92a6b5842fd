"""The ledger of what was asked of the outside world for each recipient.

Before the printer is asked, a ``mailpieces`` row holds the deterministic idempotency key of
the recipient's print attempt; after it answers, the row holds the printer's id. A recipient
has one attempt - a retry after a refusal (4xx, no piece exists) reuses it, with its key - and
a new one only when the printer failed or cancelled a piece it had accepted (a dead piece,
:attr:`MailpieceRecord.dead`) and an operator retried the recipient.

Before each later side effect (billing meter event, CDP event, image deletion) a
``side_effects`` row holds its key (see :mod:`mail_pipeline.domain.ledger`); it is marked done
after the call. A resumed run reads these rows and repeats only what did not finish, with the
same keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mail_pipeline.db.models import Mailpiece, SideEffect, utcnow
from mail_pipeline.domain.campaigns import Postage
from mail_pipeline.domain.ledger import SETTLED, SideEffectStatus
from mail_pipeline.domain.mailpieces import MailpieceStatus, PrintedPiece

#: An accepted piece in one of these statuses will never be delivered.
DEAD_STATUSES = frozenset({MailpieceStatus.FAILED, MailpieceStatus.CANCELLED})


@dataclass(frozen=True)
class MailpieceRecord:
    id: int
    recipient_id: int
    printer: str
    idempotency_key: str
    provider_piece_id: str | None
    status: MailpieceStatus
    accepted_at: datetime | None
    #: True when this call wrote the row; False when an earlier attempt had.
    new: bool
    attempt: int = 1
    #: The postage written with the attempt: a resumed attempt asks the printer with it,
    #: whatever the campaign says now (a night's downgrade affects only new pieces).
    postage: Postage | None = None

    @property
    def dead(self) -> bool:
        """The printer accepted this piece, then failed or cancelled it: it will never be
        delivered, and a retry needs a new attempt with a new key."""
        return self.provider_piece_id is not None and self.status in DEAD_STATUSES


def printer_key(recipient_id: int, attempt: int = 1) -> str:
    """The printer idempotency key of a recipient's print attempt."""
    base = f"mailpiece-recipient-{recipient_id}"
    return base if attempt == 1 else f"{base}-attempt-{attempt}"


def side_effect_key(kind: str, recipient_id: int) -> str:
    return f"{kind}-recipient-{recipient_id}"


class MailpieceLedger:
    def __init__(self, session: Session) -> None:
        self.session = session

    def request(
        self,
        *,
        recipient_id: int,
        organization_id: int,
        campaign_id: int,
        printer: str,
        postage: Postage,
    ) -> MailpieceRecord:
        """The recipient's current mailpiece row, written now (status ``requested``) if it
        has none, or a new attempt's row if its current piece is dead."""
        existing = self._get(recipient_id)
        if existing is not None and not existing.dead:
            return existing
        attempt = 1 if existing is None else existing.attempt + 1
        try:
            with self.session.begin_nested():
                self.session.add(
                    Mailpiece(
                        recipient_id=recipient_id,
                        organization_id=organization_id,
                        campaign_id=campaign_id,
                        printer=printer,
                        attempt=attempt,
                        idempotency_key=printer_key(recipient_id, attempt),
                        postage=postage,
                        status=MailpieceStatus.REQUESTED,
                    )
                )
        except IntegrityError:
            pass  # written by a concurrent attempt: read it back below
        else:
            record = self._get(recipient_id)
            assert record is not None
            return MailpieceRecord(**{**record.__dict__, "new": True})
        record = self._get(recipient_id)
        assert record is not None
        return record

    def accepted(
        self, mailpiece_id: int, piece: PrintedPiece, *, now: datetime | None = None
    ) -> None:
        self.session.execute(
            update(Mailpiece)
            .where(Mailpiece.id == mailpiece_id)
            .values(
                provider_piece_id=piece.provider_piece_id,
                status=MailpieceStatus.CREATED,
                accepted_at=now or utcnow(),
                cost_minor=piece.cost_minor,
                currency=piece.currency,
                expected_delivery_date=piece.expected_delivery_date,
                updated_at=now or utcnow(),
            )
        )

    def current(self, recipient_id: int) -> MailpieceRecord | None:
        """The recipient's latest print attempt, if any was written."""
        return self._get(recipient_id)

    def rejected(self, mailpiece_id: int, *, now: datetime | None = None) -> None:
        """The printer refused the request: no postcard exists; a retry may ask again."""
        self.session.execute(
            update(Mailpiece)
            .where(Mailpiece.id == mailpiece_id, Mailpiece.provider_piece_id.is_(None))
            .values(status=MailpieceStatus.FAILED, updated_at=now or utcnow())
        )

    def side_effect_done(self, recipient_id: int, kind: str) -> bool:
        status = self.session.scalar(
            select(SideEffect.status).where(
                SideEffect.recipient_id == recipient_id, SideEffect.kind == kind
            )
        )
        return status in SETTLED

    def begin_side_effect(self, recipient_id: int, kind: str) -> str:
        """Store the side effect's key (once) before the call; return the key."""
        key = side_effect_key(kind, recipient_id)
        if (
            self.session.scalar(
                select(SideEffect.id).where(
                    SideEffect.recipient_id == recipient_id, SideEffect.kind == kind
                )
            )
            is None
        ):
            try:
                with self.session.begin_nested():
                    self.session.add(
                        SideEffect(recipient_id=recipient_id, kind=kind, idempotency_key=key)
                    )
            except IntegrityError:
                pass
        self.session.execute(
            update(SideEffect)
            .where(SideEffect.idempotency_key == key)
            .values(attempts=SideEffect.attempts + 1)
        )
        return key

    def finish_side_effect(
        self, key: str, *, error: str | None = None, now: datetime | None = None
    ) -> None:
        """``done`` (no error) or ``failed`` (a non-retryable error, kept for operators)."""
        self.session.execute(
            update(SideEffect)
            .where(SideEffect.idempotency_key == key)
            .values(
                status=SideEffectStatus.FAILED if error else SideEffectStatus.DONE,
                last_error=error,
                completed_at=now or utcnow(),
            )
        )

    def side_effect_deferred(self, key: str, error: str) -> None:
        """A retryable failure: the row stays pending with the error; a resumed run retries."""
        self.session.execute(
            update(SideEffect).where(SideEffect.idempotency_key == key).values(last_error=error)
        )

    def _get(self, recipient_id: int) -> MailpieceRecord | None:
        row = self.session.scalar(
            select(Mailpiece)
            .where(Mailpiece.recipient_id == recipient_id)
            .order_by(Mailpiece.attempt.desc())
            .limit(1)
        )
        if row is None:
            return None
        return MailpieceRecord(
            row.id,
            row.recipient_id,
            row.printer,
            row.idempotency_key,
            row.provider_piece_id,
            row.status,
            row.accepted_at,
            new=False,
            attempt=row.attempt,
            postage=row.postage,
        )
