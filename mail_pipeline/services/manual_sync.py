"""Manual "sync this campaign now" requests (seed 000: process_manual_sync_triggers).

A request is a ``manual_sync_triggers`` row (the platform's app writes it; operators can
with ``mail-pipeline request-sync``). A sensor turns each pending request into one sync run
for the campaign's organization; the run marks it running, then completed or failed with the
number of recipients created. The campaign's sync lock is shared with scheduled syncs.
"""

from __future__ import annotations

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.manual_sync import ManualSyncTriggers, PendingTrigger
from mail_pipeline.services.sync import (
    CdpDirectory,
    OrganizationSyncResult,
    SyncSettings,
    sync_organization,
)


def request_sync(
    sessions: SessionFactory, campaign_id: int, requested_by: str, reason: str | None = None
) -> int:
    """File a pending request to sync ``campaign_id``; its id. Raises ``ValueError`` for a
    campaign that does not exist."""
    with sessions() as session:
        trigger_id = ManualSyncTriggers(session).request(campaign_id, requested_by, reason)
    if trigger_id is None:
        raise ValueError(f"there is no campaign {campaign_id}")
    return trigger_id


def pending_triggers(
    sessions: SessionFactory, *, after_id: int = 0, limit: int = 100
) -> list[PendingTrigger]:
    with sessions() as session:
        return ManualSyncTriggers(session).pending(after_id=after_id, limit=limit)


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
        ManualSyncTriggers(session).start(trigger_id, run_id)


def finish_trigger(
    sessions: SessionFactory, trigger_id: int, *, synced: int, error: str | None
) -> None:
    with sessions() as session:
        ManualSyncTriggers(session).finish(trigger_id, synced=synced, error=error)
