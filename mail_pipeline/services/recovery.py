"""Recovery: claims whose run died are resumed by the system, not by a person.

A claim is stale when its recipients have sat in a claimed state longer than the timeout
*and* no run for their batch is queued or running (the caller answers that from the Dagster
instance). Then each stage goes back to where it can safely start again
(``domain.recipients.RECOVERY_TARGET``):

- ``ProofingStaged`` / ``Proofing`` -> ``Pending``: proofing is repeatable (image uploads
  are idempotent by id);
- ``SendingStaged`` -> ``Proofed``: no printer was asked for a staged recipient (the run moves
  it to ``Sending`` first);
- ``Sending`` -> ``SendingStaged`` *in the same batch*, and the batch is returned for a new
  mailing run: that run reads the mailpiece ledger, asks the printer about each recipient's
  idempotency key before creating anything, and finishes pending follow-ups with their keys.
- ``AddressEnriching`` is left to the enrichment flow, which owns its batches.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.models import utcnow
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.recipients import RECOVERY_TARGET, RecipientStatus

log = logging.getLogger(__name__)
S = RecipientStatus
RECOVERABLE = frozenset({S.PROOFING_STAGED, S.PROOFING, S.SENDING_STAGED, S.SENDING})


@dataclass
class RecoveryResult:
    #: recipients moved, by the state they were stuck in
    returned: Counter[str] = field(default_factory=Counter)
    #: (batch id, organization id) of re-staged Sending batches that need a mailing run
    mailing_batches: list[tuple[str, int]] = field(default_factory=list)
    #: stale-looking batches skipped because a run for them is still queued or running
    still_running: list[str] = field(default_factory=list)


def recover_stale_claims(
    sessions: SessionFactory,
    batch_is_active: Callable[[str], bool],
    *,
    older_than: timedelta = timedelta(minutes=2),
    now: datetime | None = None,
) -> RecoveryResult:
    now = now or utcnow()
    result = RecoveryResult()
    with sessions() as session:
        stale = RecipientGateway(session).find_stale_claims(
            older_than, statuses=RECOVERABLE, now=now
        )
    for claim in stale:
        if claim.batch_id is None:
            log.error(
                "%s recipients in %s have no batch id; cannot recover them safely",
                claim.count,
                claim.status,
            )
            continue
        if batch_is_active(claim.batch_id):
            result.still_running.append(claim.batch_id)
            continue
        target = RECOVERY_TARGET[claim.status]
        with sessions() as session:
            moved = RecipientGateway(session).transition_batch(
                claim.batch_id, claim.status, target, now=now
            )
        if not moved:
            continue
        result.returned[str(claim.status)] += len(moved)
        log.warning(
            "batch %s: %s recipients in %s since %s returned to %s (run %s is gone)",
            claim.batch_id,
            len(moved),
            claim.status,
            claim.oldest_claimed_at,
            target,
            claim.run_id,
        )
        batch = (claim.batch_id, moved[0].organization_id)
        if target is S.SENDING_STAGED and batch not in result.mailing_batches:
            result.mailing_batches.append(batch)
    return result
