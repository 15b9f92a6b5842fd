"""Claims as leases: how long a claimed batch may wait, and how long a run may go silent.

A sensor claims recipients into a batch (``Pending -> ProofingStaged``, ``Proofed ->
SendingStaged``); a run then works through the batch. Both can die at any moment, and the
Dagster instance does not always know it (a killed process group leaves its runs STARTED until
their maximum runtime). So a claim is a **lease** with an expiry, independent of Dagster:

1. the claim opens the lease with no holder; it expires ``staged`` after the claim unless the
   batch's run takes it first (a run still *queued* in Dagster keeps it open: the queue is
   durable and the run will start);
2. the run takes the lease: it becomes the holder, and its id is the **fencing token** written
   on every recipient it holds (``claimed_by_run``). Every write the run makes is guarded by
   that token, so a run that comes back after its batch was returned cannot write;
3. while it works, the run renews the lease every ``renew_every``; a silent run's lease
   expires ``running`` after its last renewal;
4. recovery returns the recipients of an expired lease to where their stage can start again
   (``RECOVERY_TARGET``), takes the token away from them, and marks the holder's run failed
   with the reason. A run that ends with recipients it could not finish (a vendor outage left
   them in Sending) hands the lease back to expire ``deferred`` later, when recovery resumes
   them.

With the defaults, a batch whose run died is back in play within ``running`` plus one
recovery tick (about 1.5 minutes), and a batch whose run never started within ``staged`` plus
one tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from mail_pipeline.domain.recipients import RecipientStatus

S = RecipientStatus


class ClaimStage(StrEnum):
    PROOFING = "proofing"
    MAILING = "mailing"


#: The claimed states of each stage: the staged one first, then the one a run works in.
STAGE_STATES: dict[ClaimStage, tuple[RecipientStatus, RecipientStatus]] = {
    ClaimStage.PROOFING: (S.PROOFING_STAGED, S.PROOFING),
    ClaimStage.MAILING: (S.SENDING_STAGED, S.SENDING),
}


#: The claimed states a lease covers (address enrichment's AddressEnriching is not one).
LEASED_STATES = frozenset(state for states in STAGE_STATES.values() for state in states)


def stage_of(status: RecipientStatus) -> ClaimStage:
    """The stage whose claims put a recipient in ``status``."""
    for stage, states in STAGE_STATES.items():
        if status in states:
            return stage
    raise ValueError(f"{status} is not a state a batch claim holds")


@dataclass(frozen=True)
class LeasePolicy:
    #: A claimed batch waits this long for its run to take it.
    staged: timedelta = timedelta(seconds=90)
    #: A run that stops renewing loses its batch this long after the last renewal.
    running: timedelta = timedelta(seconds=60)
    #: How often a working run renews (well inside ``running``).
    renew_every: timedelta = timedelta(seconds=15)
    #: Recipients a run had to leave (a vendor outage) are resumed this long after the run.
    deferred: timedelta = timedelta(seconds=120)

    def __post_init__(self) -> None:
        if self.renew_every * 2 > self.running:
            raise ValueError("a lease must be renewed at least twice within its duration")


DEFAULT_LEASES = LeasePolicy()
