"""Manual "sync this campaign now" requests (``manual_sync_triggers``) in SQL.

The gateway files requests, lists the pending ones in id order, and moves a request through
its lifecycle (:class:`~mail_pipeline.domain.manual_sync.ManualSyncStatus`). Each method works
in the caller's session; the caller's unit of work commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.models import Campaign, ManualSyncTrigger, utcnow
from mail_pipeline.domain.manual_sync import OPEN_STATUSES, ManualSyncStatus, outcome


@dataclass(frozen=True)
class PendingTrigger:
    id: int
    organization_id: int
    campaign_id: int
    requested_by: str
    reason: str | None
    #: Which run of the request this is (``domain.manual_sync``): 1, or more after lost runs.
    attempt: int = 1


class ManualSyncTriggers:
    def __init__(self, session: Session) -> None:
        self.session = session

    def request(self, campaign_id: int, requested_by: str, reason: str | None) -> int | None:
        """File a pending request for the campaign, for its organization; its id, or None
        when there is no such campaign."""
        organization_id = self.session.scalar(
            select(Campaign.organization_id).where(Campaign.id == campaign_id)
        )
        if organization_id is None:
            return None
        trigger = ManualSyncTrigger(
            organization_id=organization_id,
            campaign_id=campaign_id,
            requested_by=requested_by,
            reason=reason,
            status=ManualSyncStatus.PENDING.value,
        )
        self.session.add(trigger)
        self.session.flush()
        return trigger.id

    def pending(self, *, after_id: int = 0, limit: int = 100) -> list[PendingTrigger]:
        """Pending requests with an id above ``after_id``, oldest first."""
        rows = self.session.scalars(
            select(ManualSyncTrigger)
            .where(
                ManualSyncTrigger.status == ManualSyncStatus.PENDING.value,
                ManualSyncTrigger.id > after_id,
            )
            .order_by(ManualSyncTrigger.id)
            .limit(limit)
        )
        return [
            PendingTrigger(
                t.id, t.organization_id, t.campaign_id, t.requested_by, t.reason, t.attempt
            )
            for t in rows
        ]

    def running(self) -> list[tuple[int, str | None, int]]:
        """``(request id, its run's id, attempt)`` of every request marked running."""
        rows = self.session.execute(
            select(ManualSyncTrigger.id, ManualSyncTrigger.run_id, ManualSyncTrigger.attempt)
            .where(ManualSyncTrigger.status == ManualSyncStatus.RUNNING.value)
            .order_by(ManualSyncTrigger.id)
        )
        return [(int(i), run_id, int(attempt)) for i, run_id, attempt in rows]

    def relaunch(self, trigger_id: int, attempt: int, note: str) -> bool:
        """Put a request whose ``attempt``-th run was lost back to pending for the next run,
        with ``note`` (why) in its error; whether it was still open on that attempt."""
        result = self.session.execute(
            update(ManualSyncTrigger)
            .where(
                ManualSyncTrigger.id == trigger_id,
                ManualSyncTrigger.attempt == attempt,
                ManualSyncTrigger.status.in_([s.value for s in OPEN_STATUSES]),
            )
            .values(
                status=ManualSyncStatus.PENDING.value,
                attempt=attempt + 1,
                run_id=None,
                launched_at=None,
                error=note,
            )
        )
        return bool(getattr(result, "rowcount", 0))

    def abandon(self, trigger_id: int, error: str, *, now: datetime | None = None) -> bool:
        """Fail a request whose run ended without saying how the sync went, if it is still
        open (pending or running); whether it was."""
        result = self.session.execute(
            update(ManualSyncTrigger)
            .where(
                ManualSyncTrigger.id == trigger_id,
                ManualSyncTrigger.status.in_([s.value for s in OPEN_STATUSES]),
            )
            .values(
                status=ManualSyncStatus.FAILED.value,
                error=error,
                completed_at=now or utcnow(),
            )
        )
        return bool(getattr(result, "rowcount", 0))

    def has_open_request(self, campaign_id: int) -> bool:
        """Whether a request for the campaign is pending or running."""
        found = self.session.scalar(
            select(ManualSyncTrigger.id)
            .where(
                ManualSyncTrigger.campaign_id == campaign_id,
                ManualSyncTrigger.status.in_([s.value for s in OPEN_STATUSES]),
            )
            .limit(1)
        )
        return found is not None

    def start(self, trigger_id: int, run_id: str, *, now: datetime | None = None) -> None:
        """The request's run started: running, with the run's id and start time."""
        self.session.execute(
            update(ManualSyncTrigger)
            .where(ManualSyncTrigger.id == trigger_id)
            .values(
                status=ManualSyncStatus.RUNNING.value, run_id=run_id, launched_at=now or utcnow()
            )
        )

    def finish(
        self, trigger_id: int, *, synced: int, error: str | None, now: datetime | None = None
    ) -> None:
        """The request's run ended: failed with ``error`` if there is one, else completed;
        with the number of recipients created either way."""
        self.session.execute(
            update(ManualSyncTrigger)
            .where(ManualSyncTrigger.id == trigger_id)
            .values(
                status=outcome(error).value,
                synced_count=synced,
                error=error,
                completed_at=now or utcnow(),
            )
        )
