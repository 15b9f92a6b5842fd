"""Batch leases in SQL (``batch_leases``); the rules are in :mod:`mail_pipeline.domain.claims`.

Every method is one guarded statement inside the caller's transaction (it never commits):

- :meth:`BatchLeases.take` succeeds only for a lease with no holder or with the same holder
  (an op retried inside its run), so two runs never hold one batch;
- :meth:`BatchLeases.renew` and :meth:`BatchLeases.hand_back` succeed only for the current
  holder: a run that lost its batch learns it from the ``False``;
- :meth:`BatchLeases.reclaim` deletes a lease only if it is *still* expired when recovery acts,
  so a renewal that lands just before recovery wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.models import BatchLease, utcnow
from mail_pipeline.domain.claims import ClaimStage


@dataclass(frozen=True)
class Lease:
    batch_id: str
    organization_id: int
    stage: ClaimStage
    holder: str | None
    expires_at: datetime
    takes: int


_COLUMNS = (
    BatchLease.batch_id,
    BatchLease.organization_id,
    BatchLease.stage,
    BatchLease.holder,
    BatchLease.expires_at,
    BatchLease.takes,
)


def _lease(row: Any) -> Lease:
    return Lease(
        row.batch_id,
        row.organization_id,
        ClaimStage(row.stage),
        row.holder,
        row.expires_at,
        row.takes,
    )


class BatchLeases:
    def __init__(self, session: Session) -> None:
        self.session = session

    def open(
        self,
        batch_id: str,
        organization_id: int,
        stage: ClaimStage,
        *,
        expires_at: datetime,
        now: datetime | None = None,
    ) -> None:
        """A new lease with no holder, for a batch just claimed (or re-staged by recovery)."""
        self.session.add(
            BatchLease(
                batch_id=batch_id,
                organization_id=organization_id,
                stage=stage,
                holder=None,
                expires_at=expires_at,
                takes=0,
                created_at=now or utcnow(),
            )
        )
        self.session.flush()

    def take(
        self, batch_id: str, holder: str, *, expires_at: datetime, now: datetime | None = None
    ) -> bool:
        """Become the batch's holder; False if another run holds it or it is gone."""
        row = self.session.execute(
            update(BatchLease)
            .where(
                BatchLease.batch_id == batch_id,
                or_(BatchLease.holder.is_(None), BatchLease.holder == holder),
            )
            .values(
                holder=holder,
                expires_at=expires_at,
                takes=BatchLease.takes + 1,
                renewed_at=now or utcnow(),
            )
            .returning(BatchLease.batch_id)
        ).first()
        return row is not None

    def renew(
        self, batch_id: str, holder: str, *, expires_at: datetime, now: datetime | None = None
    ) -> bool:
        """Push the expiry out; False when ``holder`` no longer holds the batch."""
        row = self.session.execute(
            update(BatchLease)
            .where(BatchLease.batch_id == batch_id, BatchLease.holder == holder)
            .values(expires_at=expires_at, renewed_at=now or utcnow())
            .returning(BatchLease.batch_id)
        ).first()
        return row is not None

    def hand_back(self, batch_id: str, holder: str, *, expires_at: datetime) -> bool:
        """The run ends with recipients it could not finish: the lease expires at
        ``expires_at``, when recovery resumes them."""
        row = self.session.execute(
            update(BatchLease)
            .where(BatchLease.batch_id == batch_id, BatchLease.holder == holder)
            .values(expires_at=expires_at)
            .returning(BatchLease.batch_id)
        ).first()
        return row is not None

    def release(self, batch_id: str, holder: str) -> bool:
        """The run finished its batch: the lease goes."""
        row = self.session.execute(
            delete(BatchLease)
            .where(BatchLease.batch_id == batch_id, BatchLease.holder == holder)
            .returning(BatchLease.batch_id)
        ).first()
        return row is not None

    def extend_unheld(self, batch_id: str, *, expires_at: datetime) -> bool:
        """Keep a batch that waits for its (queued) run claimed a while longer."""
        row = self.session.execute(
            update(BatchLease)
            .where(BatchLease.batch_id == batch_id, BatchLease.holder.is_(None))
            .values(expires_at=expires_at)
            .returning(BatchLease.batch_id)
        ).first()
        return row is not None

    def get(self, batch_id: str) -> Lease | None:
        row = self.session.execute(select(*_COLUMNS).where(BatchLease.batch_id == batch_id)).first()
        return None if row is None else _lease(row)

    def expired(self, *, now: datetime | None = None, limit: int = 100) -> list[Lease]:
        """Leases past their expiry, oldest first."""
        rows = self.session.execute(
            select(*_COLUMNS)
            .where(BatchLease.expires_at <= (now or utcnow()))
            .order_by(BatchLease.expires_at)
            .limit(limit)
        )
        return [_lease(row) for row in rows]

    def reclaim(self, batch_id: str, *, now: datetime | None = None) -> Lease | None:
        """Delete the lease if it is still expired; the caller returns its recipients in
        the same transaction. ``None``: renewed or reclaimed meanwhile."""
        row = self.session.execute(
            delete(BatchLease)
            .where(BatchLease.batch_id == batch_id, BatchLease.expires_at <= (now or utcnow()))
            .returning(*_COLUMNS)
        ).first()
        return None if row is None else _lease(row)
