"""The recipient state machine in SQL.

Every move is one guarded statement, ``UPDATE recipients SET status = :to ... WHERE status =
:from ... RETURNING``, checked against :data:`mail_pipeline.domain.recipients.TRANSITIONS`
before it is sent. A batch claim picks its rows and moves them in the *same* statement; on
PostgreSQL the rows are picked ``FOR UPDATE SKIP LOCKED`` in a CTE (a locking CTE is evaluated
exactly once), so concurrent claimers neither block on nor share a recipient. SQLite runs one
writer at a time, so the plain ``IN (subquery)`` form is already exclusive there.

The gateway works inside the caller's session and transaction; it never commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.models import Campaign, Organization, Recipient, utcnow
from mail_pipeline.domain.campaigns import CampaignStatus, OrganizationStatus
from mail_pipeline.domain.recipients import (
    CLAIMED_STATES,
    RecipientStatus,
    require_reason,
    require_transition,
)

_CLAIM_COLUMNS = (Recipient.id, Recipient.organization_id, Recipient.campaign_id)


@dataclass(frozen=True)
class ClaimedRecipient:
    id: int
    organization_id: int
    campaign_id: int


@dataclass(frozen=True)
class Claim:
    batch_id: str
    from_status: RecipientStatus
    to_status: RecipientStatus
    recipients: tuple[ClaimedRecipient, ...]

    @property
    def ids(self) -> list[int]:
        return [r.id for r in self.recipients]

    def __len__(self) -> int:
        return len(self.recipients)


@dataclass(frozen=True)
class StaleClaim:
    """Recipients of one batch still in a claimed state after the claim timeout."""

    batch_id: str | None
    status: RecipientStatus
    run_id: str | None
    count: int
    oldest_claimed_at: datetime


def _eligible_campaigns(statuses: Collection[CampaignStatus]) -> Any:
    return (
        select(Campaign.id)
        .join(Organization, Organization.id == Campaign.organization_id)
        .where(
            Campaign.status.in_(list(statuses)), Organization.status == OrganizationStatus.ACTIVE
        )
    )


def campaigns_by_id(session: Session, ids: Iterable[int]) -> dict[int, Campaign]:
    return {c.id: c for c in session.scalars(select(Campaign).where(Campaign.id.in_(set(ids))))}


def organizations_by_id(session: Session, ids: Iterable[int]) -> dict[int, Organization]:
    return {
        o.id: o for o in session.scalars(select(Organization).where(Organization.id.in_(set(ids))))
    }


def new_batch_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


class RecipientGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def _postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    def claim_batch(
        self,
        from_status: RecipientStatus,
        to_status: RecipientStatus,
        limit: int,
        *,
        organization_id: int | None = None,
        campaign_id: int | None = None,
        campaign_statuses: Collection[CampaignStatus] | None = None,
        batch_id: str | None = None,
        run_id: str | None = None,
        now: datetime | None = None,
    ) -> Claim:
        """Move up to ``limit`` recipients, oldest first, from one state to another and mark
        them with a new batch id. Exactly-once: a recipient is in at most one claim.

        ``campaign_statuses`` restricts the claim to campaigns in those statuses whose
        organization is active (a paused campaign's recipients wait)."""
        require_transition(from_status, to_status)
        if limit < 1:
            raise ValueError("a claim needs a positive limit")
        now = now or utcnow()
        batch_id = batch_id or new_batch_id(to_status.value.lower())
        pick = select(Recipient.id).where(Recipient.status == from_status)
        if organization_id is not None:
            pick = pick.where(Recipient.organization_id == organization_id)
        if campaign_id is not None:
            pick = pick.where(Recipient.campaign_id == campaign_id)
        if campaign_statuses is not None:
            pick = pick.where(Recipient.campaign_id.in_(_eligible_campaigns(campaign_statuses)))
        pick = pick.order_by(Recipient.id).limit(limit)
        values = {
            "status": to_status,
            "batch_id": batch_id,
            "claimed_at": now,
            "claimed_by_run": run_id,
            "status_changed_at": now,
            "updated_at": now,
            "attempts": Recipient.attempts + 1,
        }
        if self._postgres:
            picked = pick.with_for_update(skip_locked=True).cte("picked")
            stmt = (
                update(Recipient)
                .where(Recipient.id == picked.c.id, Recipient.status == from_status)
                .values(values)
                .returning(*_CLAIM_COLUMNS)
            )
        else:
            stmt = (
                update(Recipient)
                .where(Recipient.id.in_(pick.scalar_subquery()), Recipient.status == from_status)
                .values(values)
                .returning(*_CLAIM_COLUMNS)
            )
        rows = self.session.execute(stmt, execution_options={"synchronize_session": False})
        claimed = sorted((ClaimedRecipient(*row) for row in rows), key=lambda r: r.id)
        return Claim(batch_id, from_status, to_status, tuple(claimed))

    def transition(
        self,
        recipient_id: int,
        from_status: RecipientStatus,
        to_status: RecipientStatus,
        *,
        now: datetime | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move one recipient if it is still in ``from_status``; False if it was not."""
        return bool(
            self.transition_many([recipient_id], from_status, to_status, now=now, values=values)
        )

    def transition_many(
        self,
        recipient_ids: Iterable[int],
        from_status: RecipientStatus,
        to_status: RecipientStatus,
        *,
        now: datetime | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Move the given recipients that are still in ``from_status``; return those moved."""
        ids = list(recipient_ids)
        if not ids:
            return []
        require_transition(from_status, to_status)
        stmt = (
            update(Recipient)
            .where(Recipient.id.in_(ids), Recipient.status == from_status)
            .values(self._move_values(to_status, now or utcnow(), values))
            .returning(Recipient.id)
        )
        return sorted(self.session.scalars(stmt, execution_options={"synchronize_session": False}))

    def transition_batch(
        self,
        batch_id: str,
        from_status: RecipientStatus,
        to_status: RecipientStatus,
        *,
        run_id: str | None = None,
        now: datetime | None = None,
    ) -> list[ClaimedRecipient]:
        """Move a claimed batch along (ProofingStaged -> Proofing when its run starts); the
        claim stays with the batch and its time is renewed."""
        require_transition(from_status, to_status)
        now = now or utcnow()
        values: dict[str, Any] = {
            "status": to_status,
            "status_changed_at": now,
            "updated_at": now,
            "claimed_at": now,
        }
        if run_id is not None:
            values["claimed_by_run"] = run_id
        stmt = (
            update(Recipient)
            .where(Recipient.batch_id == batch_id, Recipient.status == from_status)
            .values(values)
            .returning(*_CLAIM_COLUMNS)
        )
        rows = self.session.execute(stmt, execution_options={"synchronize_session": False})
        return sorted((ClaimedRecipient(*row) for row in rows), key=lambda r: r.id)

    def mark_error(
        self,
        recipient_id: int,
        from_status: RecipientStatus,
        reason: str,
        *,
        now: datetime | None = None,
    ) -> bool:
        """Put a recipient in Error with a reason a person can read."""
        return bool(self.mark_errors({recipient_id: reason}, from_status, now=now))

    def mark_errors(
        self,
        reasons: Mapping[int, str],
        from_status: RecipientStatus,
        *,
        now: datetime | None = None,
    ) -> list[int]:
        moved: list[int] = []
        for recipient_id, reason in reasons.items():
            moved += self.transition_many(
                [recipient_id],
                from_status,
                RecipientStatus.ERROR,
                now=now,
                values={"status_reason": require_reason(reason), "error_from_status": from_status},
            )
        return moved

    def find_stale_claims(
        self,
        older_than: timedelta,
        *,
        statuses: Iterable[RecipientStatus] = CLAIMED_STATES,
        now: datetime | None = None,
    ) -> list[StaleClaim]:
        """Batches whose recipients have sat in a claimed state longer than ``older_than``
        (their run most likely died)."""
        cutoff = (now or utcnow()) - older_than
        wanted = [s for s in statuses if s in CLAIMED_STATES]
        stmt = (
            select(
                Recipient.batch_id,
                Recipient.status,
                Recipient.claimed_by_run,
                func.count(),
                func.min(Recipient.claimed_at),
            )
            .where(Recipient.status.in_(wanted), Recipient.claimed_at < cutoff)
            .group_by(Recipient.batch_id, Recipient.status, Recipient.claimed_by_run)
            .order_by(func.min(Recipient.claimed_at))
        )
        return [
            StaleClaim(batch_id, RecipientStatus(status), run_id, int(count), oldest)
            for batch_id, status, run_id, count, oldest in self.session.execute(stmt)
            if oldest is not None  # always true: the WHERE clause needs a claimed_at
        ]

    def organizations_waiting(
        self, status: RecipientStatus, campaign_statuses: Collection[CampaignStatus]
    ) -> list[int]:
        """Organizations with recipients in ``status`` that a claim could take."""
        return list(
            self.session.scalars(
                select(Recipient.organization_id)
                .where(
                    Recipient.status == status,
                    Recipient.campaign_id.in_(_eligible_campaigns(campaign_statuses)),
                )
                .distinct()
                .order_by(Recipient.organization_id)
            )
        )

    def batch(self, batch_id: str, status: RecipientStatus) -> list[Recipient]:
        """The batch's recipients in ``status`` (ORM rows, usable after the session ends)."""
        return list(
            self.session.scalars(
                select(Recipient)
                .where(Recipient.batch_id == batch_id, Recipient.status == status)
                .order_by(Recipient.id)
            )
        )

    def counts_by_status(self, *, campaign_id: int | None = None) -> dict[RecipientStatus, int]:
        stmt = select(Recipient.status, func.count()).group_by(Recipient.status)
        if campaign_id is not None:
            stmt = stmt.where(Recipient.campaign_id == campaign_id)
        return {RecipientStatus(s): int(n) for s, n in self.session.execute(stmt)}

    @staticmethod
    def _move_values(
        to_status: RecipientStatus, now: datetime, values: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        moved: dict[str, Any] = {"status": to_status, "status_changed_at": now, "updated_at": now}
        if to_status not in CLAIMED_STATES:
            # Leaving a claimed state ends the claim; batch_id stays as the last batch seen.
            moved["claimed_at"] = None
            moved["claimed_by_run"] = None
        moved.update(values or {})
        return moved
