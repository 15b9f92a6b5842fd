"""Manual "sync this campaign now" requests (seed 000: process_manual_sync_triggers).

A request is a ``manual_sync_triggers`` row (the platform's app writes it; operators can
with ``mail-pipeline request-sync``). A sensor turns each pending request into one sync run
for the campaign's organization; the run marks it running, then completed or failed with the
number of recipients created. The campaign's sync lock is shared with scheduled syncs: a
request whose campaign was locked by another sync at that moment (a second request, a sync
forced past the one-per-organization run limit, a crashed sync's unexpired lock) was not
answered by its run, and fails saying which sync held the campaign, instead of completing
with nothing synced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.manual_sync import ManualSyncTriggers, PendingTrigger
from mail_pipeline.domain.manual_sync import MAX_ATTEMPTS
from mail_pipeline.services.sync import (
    CdpDirectory,
    OrganizationSyncResult,
    Outcome,
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
    holder_gone: Callable[[str], bool] | None = None,
) -> OrganizationSyncResult:
    """Run the sync a request asked for, keeping the request's state with it: running while
    it syncs, then completed with the number created, or failed with the problem campaigns'
    details and the campaigns another sync held (``locked``: not synced by this request) -
    or with the error if the sync crashed (re-raised), so the requester always hears how it
    ended."""
    start_trigger(sessions, trigger_id, run_id)
    try:
        result = sync_organization(
            sessions,
            cdp,
            organization_id,
            SyncSettings(holder=f"run:{run_id}", holder_gone=holder_gone),
            campaign_ids=campaign_ids,
        )
    except Exception as exc:
        finish_trigger(sessions, trigger_id, synced=0, error=f"the sync run crashed: {exc!r}")
        raise
    finish_trigger(sessions, trigger_id, synced=sum(result.created.values()), error=_error(result))
    return result


def _error(result: OrganizationSyncResult) -> str | None:
    """What the requester reads on a request that failed: the problem campaigns' details,
    and the campaigns this request's sync did not sync because another sync held them."""
    lines = [p.detail or "" for p in result.problems]
    lines += [
        f"campaign {c.campaign_name} ({c.campaign_id}) was not synced by this request: "
        f"{c.detail}; ask again once that sync has ended if it must read the segment anew"
        for c in result.with_outcome(Outcome.LOCKED)
    ]
    return "; ".join(lines) or None


def start_trigger(sessions: SessionFactory, trigger_id: int, run_id: str) -> None:
    with sessions() as session:
        ManualSyncTriggers(session).start(trigger_id, run_id)


def finish_trigger(
    sessions: SessionFactory, trigger_id: int, *, synced: int, error: str | None
) -> None:
    with sessions() as session:
        ManualSyncTriggers(session).finish(trigger_id, synced=synced, error=error)


#: What a request's run can have become, as far as the request is concerned.
RUN_GONE = "gone"
#: Dagster run statuses of a run that may still start or finish the request.
RUN_IN_FLIGHT = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"})


@dataclass(frozen=True)
class Settled:
    """A request whose run ended without finishing it, and what became of it."""

    trigger_id: int
    #: Why, naming the lost run.
    reason: str
    #: Launched again (back to pending, its attempt one higher); else failed.
    again: bool


def settle_abandoned(
    sessions: SessionFactory,
    pending: list[PendingTrigger],
    run_of_pending: Callable[[PendingTrigger], tuple[str, str] | None],
    run_status: Callable[[str], str],
) -> list[Settled]:
    """Every open request whose run ended without finishing it - its worker was lost
    (killed, out of memory, its host gone), so neither ``completed`` nor ``failed`` was
    written - is launched again (back to pending for its next attempt) while it has had
    fewer than :data:`~mail_pipeline.domain.manual_sync.MAX_ATTEMPTS` runs, then failed with
    a reason the requester can read, instead of staying open for ever:

    - a *running* request whose run (``run_status`` of its id: a Dagster status name, or
      :data:`RUN_GONE`) is no longer queued, starting or started;
    - a *pending* request whose run for its attempt was launched (``run_of_pending``: that
      run's id and status, or None when none was launched) and ended before it could mark
      the request running.

    Returns what was done with each."""
    lost: list[tuple[int, int, str]] = []
    with sessions() as session:
        running = ManualSyncTriggers(session).running()
    for trigger_id, run_id, attempt in running:
        status = run_status(run_id) if run_id else RUN_GONE
        if status in RUN_IN_FLIGHT:
            continue
        lost.append(
            (
                trigger_id,
                attempt,
                f"its sync run {run_id} ended ({status.lower()}) without recording how the "
                "sync went (its worker was lost)",
            )
        )
    for trigger in pending:
        launched = run_of_pending(trigger)
        if launched is None or launched[1] in RUN_IN_FLIGHT:
            continue
        lost.append(
            (
                trigger.id,
                trigger.attempt,
                f"its sync run {launched[0]} ended ({launched[1].lower()}) before it started "
                "the sync",
            )
        )
    settled = []
    for trigger_id, attempt, why in lost:
        with sessions() as session:
            triggers = ManualSyncTriggers(session)
            if attempt < MAX_ATTEMPTS:
                reason = f"attempt {attempt} of {MAX_ATTEMPTS}: {why}; launched again"
                if triggers.relaunch(trigger_id, attempt, reason):
                    settled.append(Settled(trigger_id, reason, again=True))
                continue
            reason = (
                f"{why}, the last of {MAX_ATTEMPTS} runs; ask again with mail-pipeline request-sync"
            )
            if triggers.abandon(trigger_id, reason):
                settled.append(Settled(trigger_id, reason, again=False))
    return settled
