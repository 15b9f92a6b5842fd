"""Recovery: batches whose lease expired are resumed by the system, not by a person.

A claimed batch carries a lease (:mod:`mail_pipeline.domain.claims`); a run renews it while
it works. A lease that expired means its run is gone or silent - whatever the Dagster
instance says about that run (a killed process group leaves runs STARTED until their maximum
runtime). :func:`recover_expired_claims` then, per batch and in one transaction:

1. deletes the lease if it is *still* expired (a renewal that just landed wins);
2. returns the batch's recipients to where their stage can start again
   (``domain.recipients.RECOVERY_TARGET``), taking the run's fencing token away from them, so
   a run that comes back late cannot write:

   - ``ProofingStaged`` / ``Proofing`` -> ``Pending`` (proofing is repeatable: uploads are
     idempotent by image id);
   - ``SendingStaged`` -> ``Proofed`` (no printer was asked: the run moves a recipient to
     ``Sending`` before anything else);
   - ``Sending`` -> ``SendingStaged`` in the same batch, with a new lease, and the batch is
     returned for a new mailing run: that run reads the mailpiece ledger and asks the printer
     about each recipient's idempotency key before creating anything;
3. reports the batch and its holder's run, with the reason, so the caller marks the runs
   launched for the batch failed (a run that never took its batch included).

A batch that still waits for its first run is left alone while that run is queued (the
Dagster run queue is durable; the lease is extended), and returned once its lease expired
with no queued run. Recipients in a claimed state without any lease (claimed outside the
gateway) are returned after ``unleased_after``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.leases import BatchLeases, Lease
from mail_pipeline.db.models import utcnow
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.claims import DEFAULT_LEASES, STAGE_STATES, LeasePolicy, stage_of
from mail_pipeline.domain.recipients import RECOVERY_TARGET, RecipientStatus

log = logging.getLogger(__name__)
S = RecipientStatus


@dataclass
class RecoveryResult:
    #: recipients moved, by the state they were stuck in
    returned: Counter[str] = field(default_factory=Counter)
    #: (batch id, organization id) of re-staged Sending batches that need a mailing run
    mailing_batches: list[tuple[str, int]] = field(default_factory=list)
    #: batch id -> why it was returned (the caller marks the batch's unfinished runs failed)
    returned_batches: dict[str, str] = field(default_factory=dict)
    #: run id -> why its batch was taken away (the holder, when a run had taken it)
    failed_runs: dict[str, str] = field(default_factory=dict)
    #: batches still waiting for a queued run (their lease was extended)
    waiting: list[str] = field(default_factory=list)


def recover_expired_claims(
    sessions: SessionFactory,
    run_is_queued: Callable[[str], bool],
    *,
    policy: LeasePolicy = DEFAULT_LEASES,
    unleased_after: timedelta = timedelta(minutes=15),
    now: datetime | None = None,
) -> RecoveryResult:
    """Return the batches of expired leases; ``run_is_queued(batch_id)`` says whether a run
    for the batch waits in the run queue (not yet started)."""
    now = now or utcnow()
    result = RecoveryResult()
    with sessions() as session:
        expired = BatchLeases(session).expired(now=now)
        unleased = RecipientGateway(session).unleased_claims(unleased_after, now=now)
    for lease in expired:
        if lease.holder is None and run_is_queued(lease.batch_id):
            with sessions() as session:
                BatchLeases(session).extend_unheld(lease.batch_id, expires_at=now + policy.staged)
            result.waiting.append(lease.batch_id)
            continue
        _return_batch(sessions, lease, policy, now, result)
    for claim in unleased:
        if run_is_queued(claim.batch_id):
            result.waiting.append(claim.batch_id)
            continue
        orphan = Lease(
            claim.batch_id,
            claim.organization_id,
            stage_of(claim.status),
            claim.run_id,
            now - unleased_after,
            0,
        )
        _return_batch(sessions, orphan, policy, now, result, leased=False)
    return result


def _return_batch(
    sessions: SessionFactory,
    lease: Lease,
    policy: LeasePolicy,
    now: datetime,
    result: RecoveryResult,
    *,
    leased: bool = True,
) -> None:
    moved: dict[RecipientStatus, int] = {}
    with sessions() as session:
        if leased and BatchLeases(session).reclaim(lease.batch_id, now=now) is None:
            return  # renewed, or recovered by someone else, meanwhile
        gateway = RecipientGateway(session)
        for status in STAGE_STATES[lease.stage]:
            back = gateway.return_batch(lease.batch_id, status, RECOVERY_TARGET[status], now=now)
            if back:
                moved[status] = len(back)
        if moved.get(S.SENDING):
            BatchLeases(session).open(
                lease.batch_id,
                lease.organization_id,
                lease.stage,
                expires_at=now + policy.staged,
                now=now,
            )
    if not moved:
        return
    result.returned.update({str(status): count for status, count in moved.items()})
    if moved.get(S.SENDING):
        result.mailing_batches.append((lease.batch_id, lease.organization_id))
    what = ", ".join(f"{n} {status} -> {RECOVERY_TARGET[status]}" for status, n in moved.items())
    holder = "no run" if lease.holder is None else f"run {lease.holder}"
    reason = (
        f"batch {lease.batch_id}: its lease ({holder}) expired at "
        f"{lease.expires_at:%Y-%m-%d %H:%M:%S} UTC; returned {what}"
    )
    result.returned_batches[lease.batch_id] = reason
    if lease.holder is not None:
        result.failed_runs[lease.holder] = reason
    log.warning("%s", reason)
