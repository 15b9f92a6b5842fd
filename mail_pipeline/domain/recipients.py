"""The recipient state machine (SPEC §2): states, allowed transitions, and what they mean.

Every status change in the system is one of :data:`TRANSITIONS`; the database layer refuses
anything else before it issues SQL. The table is data so that docs, tests and the guard read
the same thing.
"""

from __future__ import annotations

from enum import StrEnum


class RecipientStatus(StrEnum):
    ADDRESS_ENRICHABLE = "AddressEnrichable"
    ADDRESS_ENRICHING = "AddressEnriching"
    PENDING = "Pending"
    PROOFING_STAGED = "ProofingStaged"
    PROOFING = "Proofing"
    PROOFED = "Proofed"
    SENDING_STAGED = "SendingStaged"
    SENDING = "Sending"
    SENT = "Sent"
    RECEIVED = "Received"
    SKIPPED = "Skipped"
    HOLDOUT = "Holdout"
    BLACKLISTED = "Blacklisted"
    ERROR = "Error"


S = RecipientStatus

#: Allowed ``from -> {to}`` moves. Comments say who makes each move.
TRANSITIONS: dict[RecipientStatus, frozenset[RecipientStatus]] = {
    # address enrichment (4x daily); no match is terminal with a reason; a failed batch
    # releases its recipients for the next one.
    # a campaign that ends (switch-off, completion sweep) skips what it never mailed.
    S.ADDRESS_ENRICHABLE: frozenset({S.ADDRESS_ENRICHING, S.SKIPPED}),
    S.ADDRESS_ENRICHING: frozenset({S.PENDING, S.SKIPPED, S.ADDRESS_ENRICHABLE}),
    # sync decides Skipped/Holdout/Blacklisted; the proofing sensor claims into ProofingStaged.
    S.PENDING: frozenset({S.PROOFING_STAGED, S.SKIPPED, S.HOLDOUT, S.BLACKLISTED}),
    # the proofing run takes its batch; recovery returns a dead run's batch to Pending.
    S.PROOFING_STAGED: frozenset({S.PROOFING, S.PENDING}),
    S.PROOFING: frozenset({S.PROOFED, S.ERROR, S.PENDING}),
    S.PROOFED: frozenset({S.SENDING_STAGED, S.SKIPPED}),
    # recovery returns a dead mailing run's staged batch to Proofed, and re-stages its
    # in-flight Sending recipients (same batch) for a new mailing run, which asks the printer
    # about each one's idempotency key before it creates anything.
    S.SENDING_STAGED: frozenset({S.SENDING, S.PROOFED}),
    # held back before the printer was asked (a pause, a daily cap): it waits in Proofed;
    # suppressed before the printer was asked (domain.suppressions): Skipped.
    S.SENDING: frozenset({S.SENT, S.ERROR, S.SENDING_STAGED, S.PROOFED, S.SKIPPED}),
    # the printer reports the piece failed or cancelled after accepting it: nothing will be
    # delivered, so the recipient must not look Sent (status tracking).
    S.SENT: frozenset({S.RECEIVED, S.ERROR}),
    S.RECEIVED: frozenset(),
    S.SKIPPED: frozenset(),
    S.HOLDOUT: frozenset(),
    S.BLACKLISTED: frozenset(),
    # an operator retry: back to the start of the stage that failed; a re-sync re-decides a
    # profile that was rejected at sync (Error with no error_from_status) from fresh data.
    S.ERROR: frozenset(
        {S.PENDING, S.PROOFED, S.ADDRESS_ENRICHABLE, S.SKIPPED, S.HOLDOUT, S.BLACKLISTED}
    ),
}

#: States a sync may create a recipient in (Error: a profile the CDP sent malformed).
INITIAL_STATES = frozenset(
    {S.ADDRESS_ENRICHABLE, S.PENDING, S.SKIPPED, S.HOLDOUT, S.BLACKLISTED, S.ERROR}
)

#: States a batch claim puts recipients in; a claim older than its timeout is stale.
CLAIMED_STATES = frozenset(
    {S.ADDRESS_ENRICHING, S.PROOFING_STAGED, S.PROOFING, S.SENDING_STAGED, S.SENDING}
)

#: No automatic move leaves these (Error waits for an operator).
TERMINAL_STATES = frozenset({S.RECEIVED, S.SKIPPED, S.HOLDOUT, S.BLACKLISTED, S.ERROR})

#: Where recovery returns a claim whose run died (its lease expired). Sending goes back only
#: to SendingStaged, never further: the next mailing run of the batch first asks the printer
#: about the recipient's idempotency key, and a piece the printer already accepted is finished
#: as Sent, never printed again.
RECOVERY_TARGET = {
    S.ADDRESS_ENRICHING: S.ADDRESS_ENRICHABLE,
    S.PROOFING_STAGED: S.PENDING,
    S.PROOFING: S.PENDING,
    S.SENDING_STAGED: S.PROOFED,
    S.SENDING: S.SENDING_STAGED,
}

#: Error's operator retry goes back to the start of the stage that failed. A piece the printer
#: failed or cancelled after accepting it (Error from Sent) starts again at proofing: its
#: hosted proofs were deleted once the printer accepted it, and it needs a new print attempt.
RETRY_TARGET = {S.PROOFING: S.PENDING, S.SENDING: S.PROOFED, S.SENT: S.PENDING}


def retry_target(error_from_status: RecipientStatus | None) -> RecipientStatus:
    """Where an operator retry sends an Error recipient; one rejected at sync starts over."""
    if error_from_status is None:
        return S.PENDING
    return RETRY_TARGET[error_from_status]


class IllegalTransition(ValueError):
    def __init__(self, from_status: RecipientStatus, to_status: RecipientStatus) -> None:
        super().__init__(f"a recipient cannot move from {from_status} to {to_status}")
        self.from_status = from_status
        self.to_status = to_status


def can_transition(from_status: RecipientStatus, to_status: RecipientStatus) -> bool:
    return to_status in TRANSITIONS[from_status]


def require_transition(from_status: RecipientStatus, to_status: RecipientStatus) -> None:
    if not can_transition(from_status, to_status):
        raise IllegalTransition(from_status, to_status)


def require_reason(reason: str | None) -> str:
    """Every recipient in Error (or Skipped) carries a reason a person can read."""
    text = (reason or "").strip()
    if not text:
        raise ValueError("a recipient put in Error needs a human-readable reason")
    return text[:2000]
