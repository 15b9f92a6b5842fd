"""Mailpiece statuses: one vocabulary for what Lob, Stannp and IntelliPrint report.

Each printer's webhook statuses map onto :class:`MailpieceStatus`; ``RANK`` orders them so a
late or duplicated webhook never moves a mailpiece backwards (``delivered`` then a delayed
``in_transit`` stays ``delivered``).
"""

from __future__ import annotations

from enum import StrEnum


class MailpieceStatus(StrEnum):
    REQUESTED = "requested"  # row written, idempotency key stored, printer not yet asked
    CREATED = "created"  # the printer accepted the piece
    IN_PRODUCTION = "in_production"
    MAILED = "mailed"
    IN_TRANSIT = "in_transit"
    IN_LOCAL_AREA = "in_local_area"
    PROCESSED_FOR_DELIVERY = "processed_for_delivery"
    RE_ROUTED = "re_routed"
    DELIVERED = "delivered"
    RETURNED = "returned"
    CANCELLED = "cancelled"
    FAILED = "failed"


M = MailpieceStatus

RANK: dict[MailpieceStatus, int] = {
    M.REQUESTED: 0,
    M.CREATED: 1,
    M.IN_PRODUCTION: 2,
    M.MAILED: 3,
    M.IN_TRANSIT: 4,
    M.RE_ROUTED: 5,
    M.IN_LOCAL_AREA: 6,
    M.PROCESSED_FOR_DELIVERY: 7,
    M.DELIVERED: 8,
    M.RETURNED: 9,
    M.CANCELLED: 9,
    M.FAILED: 9,
}

#: The recipient is Received once its mailpiece reaches one of these.
DELIVERED_STATUSES = frozenset({M.DELIVERED})
FINAL_STATUSES = frozenset({M.DELIVERED, M.RETURNED, M.CANCELLED, M.FAILED})


def advances(current: MailpieceStatus, new: MailpieceStatus) -> bool:
    """Whether a reported status moves the piece forward (else it is stale or a duplicate)."""
    if current in FINAL_STATUSES:
        return False
    return RANK[new] > RANK[current]
