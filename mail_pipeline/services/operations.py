"""What an operator does by hand: list recipients in Error with their reasons, and retry them.

A retry sends a recipient back to the start of the stage that failed (``retry_target``):
proofing errors to Pending, mailing errors to Proofed, sync-time rejections to Pending. It is
safe to retry a mailing error: the mailpiece ledger holds one row per recipient, so a printer
that already has the postcard is found by its idempotency key and nothing is printed twice.
The previous reason is kept in ``status_reason`` with who retried it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.models import Recipient
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.recipients import RecipientStatus, retry_target


@dataclass(frozen=True)
class ErrorRecipient:
    id: int
    campaign_id: int
    failed_in: RecipientStatus | None
    reason: str


def error_recipients(
    sessions: SessionFactory, *, campaign_id: int | None = None, limit: int = 100
) -> list[ErrorRecipient]:
    with sessions() as session:
        query = select(Recipient).where(Recipient.status == RecipientStatus.ERROR)
        if campaign_id is not None:
            query = query.where(Recipient.campaign_id == campaign_id)
        rows = session.scalars(query.order_by(Recipient.id).limit(limit))
        return [
            ErrorRecipient(r.id, r.campaign_id, r.error_from_status, r.status_reason or "")
            for r in rows
        ]


def retry_errors(sessions: SessionFactory, recipient_ids: list[int], *, by: str) -> list[int]:
    """Send the given Error recipients back to where their stage starts; return those moved."""
    moved: list[int] = []
    with sessions() as session:
        gateway = RecipientGateway(session)
        rows = session.scalars(
            select(Recipient).where(
                Recipient.id.in_(recipient_ids), Recipient.status == RecipientStatus.ERROR
            )
        ).all()
        for row in rows:
            note = f"retried by {by} (was: {row.status_reason})"[:2000]
            target = retry_target(row.error_from_status)
            moved += gateway.transition_many(
                [row.id],
                RecipientStatus.ERROR,
                target,
                values={"status_reason": note, "error_from_status": None},
            )
    return sorted(moved)
