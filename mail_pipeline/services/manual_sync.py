"""Manual "sync this campaign now" requests (seed 000: process_manual_sync_triggers).

A request is a ``manual_sync_triggers`` row (the platform's app writes it; operators can
with ``mail-pipeline request-sync``). A sensor turns each pending request into one sync run
for the campaign's organization; the run marks it running, then completed or failed with the
number of recipients created. The campaign's sync lock is shared with scheduled syncs.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.models import Campaign, ManualSyncTrigger, utcnow
from mail_pipeline.services.sync import (
    CdpDirectory,
    OrganizationSyncResult,
    SyncSettings,
    sync_organization,
)


@dataclass(frozen=True)
class PendingTrigger:
    id: int
    organization_id: int
    campaign_id: int
    requested_by: str
    reason: str | None


def request_sync(
    sessions: SessionFactory, campaign_id: int, requested_by: str, reason: str | None = None
) -> int:
    with sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise ValueError(f"there is no campaign {campaign_id}")
        trigger = ManualSyncTrigger(
            organization_id=campaign.organization_id,
            campaign_id=campaign_id,
            requested_by=requested_by,
            reason=reason,
        )
        session.add(trigger)
        session.flush()
        return trigger.id


def pending_triggers(
    sessions: SessionFactory, *, after_id: int = 0, limit: int = 100
) -> list[PendingTrigger]:
    with sessions() as session:
        rows = session.scalars(
            select(ManualSyncTrigger)
            .where(ManualSyncTrigger.status == "pending", ManualSyncTrigger.id > after_id)
            .order_by(ManualSyncTrigger.id)
            .limit(limit)
        )
        return [
            PendingTrigger(t.id, t.organization_id, t.campaign_id, t.requested_by, t.reason)
            for t in rows
        ]


def sync_for_request(
    sessions: SessionFactory,
    cdp: CdpDirectory,
    trigger_id: int,
    run_id: str,
    organization_id: int,
    campaign_ids: list[int] | None,
) -> OrganizationSyncResult:
    """Run the sync a request asked for, keeping the request's state with it: running while
    it syncs, then completed with the number created, or failed with the problem campaigns'
    details - or with the error if the sync crashed (re-raised), so the requester always
    hears how it ended."""
    start_trigger(sessions, trigger_id, run_id)
    try:
        result = sync_organization(
            sessions,
            cdp,
            organization_id,
            SyncSettings(holder=f"run:{run_id}"),
            campaign_ids=campaign_ids,
        )
    except Exception as exc:
        finish_trigger(sessions, trigger_id, synced=0, error=f"the sync run crashed: {exc!r}")
        raise
    finish_trigger(
        sessions,
        trigger_id,
        synced=sum(result.created.values()),
        error="; ".join(p.detail or "" for p in result.problems) or None,
    )
    return result


def start_trigger(sessions: SessionFactory, trigger_id: int, run_id: str) -> None:
    with sessions() as session:
        session.execute(
            update(ManualSyncTrigger)
            .where(ManualSyncTrigger.id == trigger_id)
            .values(status="running", run_id=run_id, launched_at=utcnow())
        )


def finish_trigger(
    sessions: SessionFactory, trigger_id: int, *, synced: int, error: str | None
) -> None:
    with sessions() as session:
        session.execute(
            update(ManualSyncTrigger)
            .where(ManualSyncTrigger.id == trigger_id)
            .values(
                status="failed" if error else "completed",
                synced_count=synced,
                error=error,
                completed_at=utcnow(),
            )
        )
