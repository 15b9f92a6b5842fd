"""The recipient state machine in SQL.

Every move is one guarded statement, ``UPDATE recipients SET status = :to ... WHERE status =
:from ... RETURNING``, checked against :data:`mail_pipeline.domain.recipients.TRANSITIONS`
before it is sent. A batch claim picks its rows and moves them in the *same* statement; on
PostgreSQL the rows are picked ``FOR UPDATE SKIP LOCKED`` in a CTE (a locking CTE is evaluated
exactly once), so concurrent claimers neither block on nor share a recipient. SQLite runs one
writer at a time, so the plain ``IN (subquery)`` form is already exclusive there.

A claim opens the batch's lease (:mod:`mail_pipeline.domain.claims`) in the same transaction;
the run that works on the batch takes it with :meth:`RecipientGateway.start_batch`, which
writes its fencing token (the run id) on every recipient as ``claimed_by_run``. The moves a
run makes afterwards pass ``holder=`` and are guarded by that token, so a run whose batch was
returned by recovery changes nothing.

The gateway works inside the caller's session and transaction; it never commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, exists, func, select, true, update
from sqlalchemy.orm import Session

from mail_pipeline.db.leases import BatchLeases
from mail_pipeline.db.models import BatchLease, Campaign, Organization, Recipient, utcnow
from mail_pipeline.db.sending import sendable
from mail_pipeline.domain.campaigns import CampaignStatus, OrganizationStatus
from mail_pipeline.domain.claims import DEFAULT_LEASES, LEASED_STATES, stage_of
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
class UnleasedClaim:
    """Recipients of one batch in a claimed state with no lease (claimed by something that
    bypassed :meth:`RecipientGateway.claim_batch`); recovery treats them as expired."""

    batch_id: str
    organization_id: int
    status: RecipientStatus
    run_id: str | None
    count: int


def _eligible_campaigns(statuses: Collection[CampaignStatus], gate_day: date | None = None) -> Any:
    """Campaigns in ``statuses`` of active organizations; with ``gate_day``, only those
    the gate before the printer lets through that day (``db.sending.sendable``)."""
    stmt = (
        select(Campaign.id)
        .join(Organization, Organization.id == Campaign.organization_id)
        .where(
            Campaign.status.in_(list(statuses)), Organization.status == OrganizationStatus.ACTIVE
        )
    )
    return stmt if gate_day is None else stmt.where(sendable(gate_day))


def campaigns_by_id(session: Session, ids: Iterable[int]) -> dict[int, Campaign]:
    return {c.id: c for c in session.scalars(select(Campaign).where(Campaign.id.in_(set(ids))))}


def organizations_by_id(session: Session, ids: Iterable[int]) -> dict[int, Organization]:
    return {
        o.id: o for o in session.scalars(select(Organization).where(Organization.id.in_(set(ids))))
    }


def _held_by(holder: str | None) -> Any:
    """The fencing guard: the recipient still carries ``holder``'s token (no guard: None)."""
    return Recipient.claimed_by_run == holder if holder is not None else true()


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
        gate_day: date | None = None,
        batch_id: str | None = None,
        now: datetime | None = None,
        lease_expires_at: datetime | None = None,
    ) -> Claim:
        """Move up to ``limit`` recipients, oldest first, from one state to another and mark
        them with a new batch id, and open the batch's lease (expiring ``lease_expires_at``,
        by default the policy's ``staged`` after ``now``). Exactly-once: a recipient is in at
        most one claim. The batch's recipients come from one organization when
        ``organization_id`` is given (the sensors always give it).

        ``campaign_statuses`` restricts the claim to campaigns in those statuses whose
        organization is active (a paused campaign's recipients wait); ``gate_day`` further
        to those not paused and under their daily caps that day (``db.sending``).

        Only the run stages' claims open a lease (``domain.claims.LEASED_STATES``): an address
        enrichment batch waits hours for its vendor, and its own record
        (``enrichment_batches``, with a deadline) returns its recipients instead."""
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
            pick = pick.where(
                Recipient.campaign_id.in_(_eligible_campaigns(campaign_statuses, gate_day))
            )
        pick = pick.order_by(Recipient.id).limit(limit)
        values = {
            "status": to_status,
            "batch_id": batch_id,
            "claimed_at": now,
            "claimed_by_run": None,
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
        if claimed and to_status in LEASED_STATES:
            BatchLeases(self.session).open(
                batch_id,
                claimed[0].organization_id,
                stage_of(to_status),
                expires_at=lease_expires_at or now + DEFAULT_LEASES.staged,
                now=now,
            )
        return Claim(batch_id, from_status, to_status, tuple(claimed))

    def transition(
        self,
        recipient_id: int,
        from_status: RecipientStatus,
        to_status: RecipientStatus,
        *,
        now: datetime | None = None,
        values: Mapping[str, Any] | None = None,
        holder: str | None = None,
    ) -> bool:
        """Move one recipient if it is still in ``from_status`` (and, with ``holder``, still
        held by that run); False if it was not."""
        return bool(
            self.transition_many(
                [recipient_id], from_status, to_status, now=now, values=values, holder=holder
            )
        )

    def transition_many(
        self,
        recipient_ids: Iterable[int],
        from_status: RecipientStatus,
        to_status: RecipientStatus,
        *,
        now: datetime | None = None,
        values: Mapping[str, Any] | None = None,
        holder: str | None = None,
    ) -> list[int]:
        """Move the given recipients that are still in ``from_status`` - and, with ``holder``,
        still carry that run's fencing token; return those moved."""
        ids = list(recipient_ids)
        if not ids:
            return []
        require_transition(from_status, to_status)
        stmt = (
            update(Recipient)
            .where(Recipient.id.in_(ids), Recipient.status == from_status, _held_by(holder))
            .values(self._move_values(to_status, now or utcnow(), values))
            .returning(Recipient.id)
        )
        return sorted(self.session.scalars(stmt, execution_options={"synchronize_session": False}))

    def transition_each(
        self,
        values_by_id: Mapping[int, Mapping[str, Any]],
        from_status: RecipientStatus,
        to_status: RecipientStatus,
        *,
        holder: str,
        now: datetime | None = None,
    ) -> list[int]:
        """Move each recipient with values of its own (every mapping has the same keys) if
        ``holder`` still holds it in ``from_status``: the holds are read (and on PostgreSQL
        locked), then one statement runs for all of them (an executemany, not a statement
        per recipient); returns those moved."""
        require_transition(from_status, to_status)
        columns = sorted({column for values in values_by_id.values() for column in values})
        if any(set(values) != set(columns) for values in values_by_id.values()):
            raise ValueError("transition_each needs the same columns for every recipient")
        held = sorted(self.held(values_by_id, from_status, holder))
        if not held:
            return []
        table = Recipient.__table__
        stmt = (
            update(table)  # type: ignore[arg-type]
            .where(
                table.c.id == bindparam("_recipient_id"),
                table.c.status == from_status,
                table.c.claimed_by_run == holder,
            )
            .values(
                {
                    **self._move_values(to_status, now or utcnow(), None),
                    **{column: bindparam(f"_value_{column}") for column in columns},
                }
            )
        )
        self.session.connection().execute(
            stmt,
            [
                {
                    "_recipient_id": rid,
                    **{f"_value_{c}": values_by_id[rid][c] for c in columns},
                }
                for rid in held
            ],
        )
        return held

    def transition_campaign(
        self,
        campaign_id: int,
        from_status: RecipientStatus,
        to_status: RecipientStatus,
        *,
        now: datetime | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> int:
        """Move every recipient of ``campaign_id`` that is in ``from_status`` (a campaign's
        end skips what it never mailed); returns how many moved."""
        require_transition(from_status, to_status)
        stmt = (
            update(Recipient)
            .where(Recipient.campaign_id == campaign_id, Recipient.status == from_status)
            .values(self._move_values(to_status, now or utcnow(), values))
        )
        result = self.session.execute(stmt, execution_options={"synchronize_session": False})
        return int(result.rowcount)  # type: ignore[attr-defined]

    def start_batch(
        self,
        batch_id: str,
        from_status: RecipientStatus,
        to_status: RecipientStatus,
        holder: str,
        *,
        expires_at: datetime | None = None,
        now: datetime | None = None,
    ) -> list[ClaimedRecipient] | None:
        """The run ``holder`` takes its batch (ProofingStaged -> Proofing, SendingStaged ->
        Sending): the lease becomes its (expiring ``expires_at``, by default the policy's
        ``running`` after ``now``) and every staged recipient gets its fencing token.

        Returns the batch's recipients now in ``to_status`` held by ``holder`` - including
        those it already held (an op retried inside its run) - or ``None`` when the batch is
        not this run's to take (recovery returned it, or another run holds it)."""
        require_transition(from_status, to_status)
        now = now or utcnow()
        if not BatchLeases(self.session).take(
            batch_id, holder, expires_at=expires_at or now + DEFAULT_LEASES.running, now=now
        ):
            return None
        self.session.execute(
            update(Recipient)
            .where(
                Recipient.batch_id == batch_id,
                Recipient.status == from_status,
                Recipient.claimed_by_run.is_(None),
            )
            .values(
                status=to_status,
                status_changed_at=now,
                updated_at=now,
                claimed_at=now,
                claimed_by_run=holder,
            ),
            execution_options={"synchronize_session": False},
        )
        rows = self.session.execute(
            select(*_CLAIM_COLUMNS)
            .where(
                Recipient.batch_id == batch_id,
                Recipient.status == to_status,
                Recipient.claimed_by_run == holder,
            )
            .order_by(Recipient.id)
        )
        return [ClaimedRecipient(*row) for row in rows]

    def return_batch(
        self,
        batch_id: str,
        from_status: RecipientStatus,
        to_status: RecipientStatus,
        *,
        now: datetime | None = None,
    ) -> list[ClaimedRecipient]:
        """Recovery's move: the batch's recipients still in ``from_status`` go to
        ``to_status`` and lose their fencing token (whoever held them can no longer write).
        Returned to a staged state they keep the batch id, for a new run to take."""
        require_transition(from_status, to_status)
        now = now or utcnow()
        values: dict[str, Any] = {"claimed_by_run": None}
        if to_status in CLAIMED_STATES:
            values["claimed_at"] = now
        stmt = (
            update(Recipient)
            .where(Recipient.batch_id == batch_id, Recipient.status == from_status)
            .values(self._move_values(to_status, now, values))
            .returning(*_CLAIM_COLUMNS)
        )
        rows = self.session.execute(stmt, execution_options={"synchronize_session": False})
        return sorted((ClaimedRecipient(*row) for row in rows), key=lambda r: r.id)

    def holds(self, recipient_id: int, status: RecipientStatus, holder: str) -> bool:
        """Whether ``holder`` still holds the recipient in ``status``. On PostgreSQL the row
        stays locked until the transaction ends, so recovery cannot take it meanwhile (the
        mailing run checks this in the transaction that records a print request)."""
        return (
            self.session.execute(
                select(Recipient.id)
                .where(
                    Recipient.id == recipient_id,
                    Recipient.status == status,
                    Recipient.claimed_by_run == holder,
                )
                .with_for_update()
            ).first()
            is not None
        )

    def held(self, recipient_ids: Iterable[int], status: RecipientStatus, holder: str) -> set[int]:
        """Those of ``recipient_ids`` that ``holder`` still holds in ``status`` (:meth:`holds`
        for many: on PostgreSQL the rows stay locked, in id order, until the transaction
        ends)."""
        ids = sorted(set(recipient_ids))
        if not ids:
            return set()
        return set(
            self.session.scalars(
                select(Recipient.id)
                .where(
                    Recipient.id.in_(ids),
                    Recipient.status == status,
                    Recipient.claimed_by_run == holder,
                )
                .order_by(Recipient.id)
                .with_for_update()
            )
        )

    def mark_error(
        self,
        recipient_id: int,
        from_status: RecipientStatus,
        reason: str,
        *,
        now: datetime | None = None,
        holder: str | None = None,
    ) -> bool:
        """Put a recipient in Error with a reason a person can read."""
        return bool(self.mark_errors({recipient_id: reason}, from_status, now=now, holder=holder))

    def mark_errors(
        self,
        reasons: Mapping[int, str],
        from_status: RecipientStatus,
        *,
        now: datetime | None = None,
        holder: str | None = None,
    ) -> list[int]:
        moved: list[int] = []
        for recipient_id, reason in reasons.items():
            moved += self.transition_many(
                [recipient_id],
                from_status,
                RecipientStatus.ERROR,
                now=now,
                values={"status_reason": require_reason(reason), "error_from_status": from_status},
                holder=holder,
            )
        return moved

    def unleased_claims(
        self, older_than: timedelta, *, now: datetime | None = None
    ) -> list[UnleasedClaim]:
        """Batches with recipients in a claimed state, claimed more than ``older_than`` ago,
        whose lease does not exist - a safety net: every claim made by this gateway has one."""
        cutoff = (now or utcnow()) - older_than
        has_lease = exists().where(BatchLease.batch_id == Recipient.batch_id)
        stmt = (
            select(
                Recipient.batch_id,
                func.min(Recipient.organization_id),
                Recipient.status,
                func.max(Recipient.claimed_by_run),
                func.count(),
            )
            .where(
                Recipient.status.in_(CLAIMED_STATES - {RecipientStatus.ADDRESS_ENRICHING}),
                Recipient.claimed_at < cutoff,
                Recipient.batch_id.is_not(None),
                ~has_lease,
            )
            .group_by(Recipient.batch_id, Recipient.status)
            .order_by(Recipient.batch_id)
        )
        return [
            UnleasedClaim(str(batch_id), org, RecipientStatus(status), run_id, int(count))
            for batch_id, org, status, run_id, count in self.session.execute(stmt)
        ]

    def organizations_waiting(
        self,
        status: RecipientStatus,
        campaign_statuses: Collection[CampaignStatus],
        gate_day: date | None = None,
    ) -> list[int]:
        """Organizations with recipients in ``status`` that a claim could take."""
        return list(
            self.session.scalars(
                select(Recipient.organization_id)
                .where(
                    Recipient.status == status,
                    Recipient.campaign_id.in_(_eligible_campaigns(campaign_statuses, gate_day)),
                )
                .distinct()
                .order_by(Recipient.organization_id)
            )
        )

    def organizations_in(self, statuses: Collection[RecipientStatus]) -> set[int]:
        """Organizations with recipients in any of ``statuses``."""
        return set(
            self.session.scalars(
                select(Recipient.organization_id)
                .where(Recipient.status.in_(sorted(statuses)))
                .distinct()
            )
        )

    def batch(
        self, batch_id: str, status: RecipientStatus, *, holder: str | None = None
    ) -> list[Recipient]:
        """The batch's recipients in ``status`` (held by ``holder``, when given), as ORM rows
        usable after the session ends."""
        return list(
            self.session.scalars(
                select(Recipient)
                .where(
                    Recipient.batch_id == batch_id,
                    Recipient.status == status,
                    _held_by(holder),
                )
                .order_by(Recipient.id)
            )
        )

    def in_status(
        self, status: RecipientStatus, *, campaign_id: int | None = None, limit: int = 100
    ) -> list[Recipient]:
        """Recipients in ``status`` (of one campaign, when given), oldest first."""
        query = select(Recipient).where(Recipient.status == status)
        if campaign_id is not None:
            query = query.where(Recipient.campaign_id == campaign_id)
        return list(self.session.scalars(query.order_by(Recipient.id).limit(limit)))

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
