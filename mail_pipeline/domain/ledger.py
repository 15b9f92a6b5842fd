"""The side-effect ledger's vocabulary: what is asked of the outside world after a postcard
is accepted, and where each request stands.

Each follow-up of a mailed postcard (a Stripe meter event, a Klaviyo "Postcard Sent" event,
the deletion of the hosted proof images) gets a ledger row holding its idempotency key before
the call; the row is ``done`` after it, ``failed`` when the vendor refused it for good (kept
for an operator), and stays ``pending`` after a retryable failure, for a resumed run.
"""

from __future__ import annotations

from enum import StrEnum


class SideEffectKind(StrEnum):
    BILLING = "billing_meter"
    CDP_EVENT = "cdp_event"
    IMAGE_DELETION = "image_deletion"


class SideEffectStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


#: A row in one of these states is not tried again.
SETTLED = frozenset({SideEffectStatus.DONE, SideEffectStatus.FAILED})


def ledger_kind(kind: SideEffectKind, attempt: int) -> str:
    """The ledger's name for ``kind`` at a print attempt. Billing and the CDP event happen
    once per recipient, whatever the attempt (a brand pays for one postcard per person, and
    the person hears of it once); each attempt's proofs are deleted after that attempt."""
    if kind is SideEffectKind.IMAGE_DELETION and attempt > 1:
        return f"{kind}-{attempt}"
    return str(kind)
