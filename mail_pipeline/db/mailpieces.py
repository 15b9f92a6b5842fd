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

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import dialect_insert
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


@dataclass(frozen=True)
class PieceRequest:
    """A print attempt to write for one recipient (``MailpieceLedger.request_many``)."""

    recipient_id: int
    organization_id: int
    campaign_id: int
    printer: str
    postage: Postage


class MailpieceLedger:
    def __init__(self, session: Session) -> None:
        self.session = session

    # -- many recipients at once (a mailing run's chunk: one statement each, not per recipient)
    def current_many(self, recipient_ids: Collection[int]) -> dict[int, MailpieceRecord]:
        """The latest print attempt of each of these recipients that has one."""
        if not recipient_ids:
            return {}
        rows = self.session.scalars(
            select(Mailpiece)
            .where(Mailpiece.recipient_id.in_(sorted(recipient_ids)))
            .order_by(Mailpiece.recipient_id, Mailpiece.attempt)
        )
        return {row.recipient_id: _record(row) for row in rows}

    def request_many(
        self, requests: Sequence[PieceRequest], current: Mapping[int, MailpieceRecord]
    ) -> dict[int, MailpieceRecord]:
        """What :meth:`request` does for each, in two statements: the rows of recipients with
        no attempt (or a dead one, ``current``) are written, a row a concurrent attempt wrote
        first is kept; returns every recipient's current row, ``new`` on those written now."""
        rows = []
        for r in requests:
            existing = current.get(r.recipient_id)
            if existing is not None and not existing.dead:
                continue
            attempt = 1 if existing is None else existing.attempt + 1
            rows.append(
                {
                    "recipient_id": r.recipient_id,
                    "organization_id": r.organization_id,
                    "campaign_id": r.campaign_id,
                    "printer": r.printer,
                    "attempt": attempt,
                    "idempotency_key": printer_key(r.recipient_id, attempt),
                    "postage": r.postage,
                    "status": MailpieceStatus.REQUESTED,
                }
            )
        written: set[int] = set()
        if rows:
            # An executemany (SQLAlchemy sends it as multi-row INSERTs): its statement is
            # compiled once per process, where a multi-VALUES statement is compiled per call.
            table = Mailpiece.__table__
            written = set(
                self.session.connection()
                .execute(
                    dialect_insert(self.session)(table)
                    .on_conflict_do_nothing()
                    .returning(table.c.recipient_id),
                    rows,
                )
                .scalars()
            )
        now = self.current_many([r.recipient_id for r in requests])
        return {
            rid: MailpieceRecord(**{**record.__dict__, "new": rid in written})
            for rid, record in now.items()
        }

    def accepted_many(
        self, pieces: Mapping[int, PrintedPiece], *, now: datetime | None = None
    ) -> None:
        """:meth:`accepted` for each ``mailpiece id -> piece``, as one executemany."""
        if not pieces:
            return
        now = now or utcnow()
        table = Mailpiece.__table__
        self.session.connection().execute(
            update(table)  # type: ignore[arg-type]
            .where(table.c.id == bindparam("mailpiece_id"))
            .values(
                provider_piece_id=bindparam("piece_id"),
                status=MailpieceStatus.CREATED,
                accepted_at=now,
                cost_minor=bindparam("cost"),
                currency=bindparam("cur"),
                expected_delivery_date=bindparam("expected"),
                updated_at=now,
            ),
            [
                {
                    "mailpiece_id": mailpiece_id,
                    "piece_id": piece.provider_piece_id,
                    "cost": piece.cost_minor,
                    "cur": piece.currency,
                    "expected": piece.expected_delivery_date,
                }
                for mailpiece_id, piece in pieces.items()
            ],
        )

    def side_effects_settled(
        self, recipient_ids: Collection[int], kinds: Collection[str]
    ) -> set[tuple[int, str]]:
        """``(recipient, kind)`` of the follow-ups already done or failed for good."""
        if not recipient_ids or not kinds:
            return set()
        rows = self.session.execute(
            select(SideEffect.recipient_id, SideEffect.kind).where(
                SideEffect.recipient_id.in_(sorted(recipient_ids)),
                SideEffect.kind.in_(sorted(kinds)),
                SideEffect.status.in_(sorted(SETTLED)),
            )
        )
        return {(int(rid), str(kind)) for rid, kind in rows}

    def begin_side_effects(self, pairs: Collection[tuple[int, str]]) -> dict[tuple[int, str], str]:
        """:meth:`begin_side_effect` for each ``(recipient, kind)``: the rows with their keys
        are written once (kept if there), attempts counted; returns the keys."""
        if not pairs:
            return {}
        keys = {pair: side_effect_key(pair[1], pair[0]) for pair in pairs}
        self.session.connection().execute(
            dialect_insert(self.session)(SideEffect.__table__).on_conflict_do_nothing(),
            [
                {"recipient_id": rid, "kind": kind, "idempotency_key": key}
                for (rid, kind), key in sorted(keys.items())
            ],
        )
        self.session.execute(
            update(SideEffect)
            .where(SideEffect.idempotency_key.in_(sorted(keys.values())))
            .values(attempts=SideEffect.attempts + 1),
            execution_options={"synchronize_session": False},
        )
        return keys

    def finish_side_effects(
        self,
        done: Collection[str],
        *,
        failed: Mapping[str, str] | None = None,
        deferred: Mapping[str, str] | None = None,
        now: datetime | None = None,
    ) -> None:
        """Settle many follow-ups: ``done`` keys, ``failed`` (key -> a non-retryable error)
        and ``deferred`` (key -> a retryable error, left pending for a resumed run)."""
        now = now or utcnow()
        if done:
            self.session.execute(
                update(SideEffect)
                .where(SideEffect.idempotency_key.in_(sorted(done)))
                .values(status=SideEffectStatus.DONE, last_error=None, completed_at=now),
                execution_options={"synchronize_session": False},
            )
        for key, error in (failed or {}).items():
            self.finish_side_effect(key, error=error, now=now)
        for key, error in (deferred or {}).items():
            self.side_effect_deferred(key, error)

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
        return _record(row)


def _record(row: Mailpiece) -> MailpieceRecord:
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
