"""Mailpiece statuses: one vocabulary for what Lob, Stannp and IntelliPrint report.

Each printer's webhook statuses map onto :class:`MailpieceStatus`; ``RANK`` orders them so a
late or duplicated webhook never moves a mailpiece backwards (``delivered`` then a delayed
``in_transit`` stays ``delivered``).

What a printer reports is checked here before it reaches the database, against the bounds of
the columns it is stored in (the ``mailpieces`` and ``mailpiece_events`` models use the same
constants):

- keys (printer name, piece id, event id) are text of at most their column's length; an
  over-long key is refused, never cut (a cut key could name another piece or event);
- ``detail`` is informational (a tracking location, a return reason): it is cut to
  :data:`MAX_EVENT_DETAIL_LENGTH` characters (:func:`clip_detail`);
- no stored text may hold a character PostgreSQL's UTF-8 text refuses: NUL, or a lone
  surrogate (which has no UTF-8 encoding);
- ``occurred_at`` is an aware UTC time between :data:`EARLIEST_EVENT_AT` and one day
  (:data:`EVENT_CLOCK_SKEW`) after now: earlier is no event of this platform, later is a
  printer's clock gone wrong, and either would put the piece's timeline out of order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from mail_pipeline.domain.fields import unstorable_character

#: ``mailpieces.printer`` and ``mailpiece_events.printer``.
MAX_PRINTER_NAME_LENGTH = 32
#: ``mailpieces.idempotency_key``.
MAX_IDEMPOTENCY_KEY_LENGTH = 128
#: ``mailpieces.provider_piece_id``: Lob ``psc_...``, Stannp's number, IntelliPrint ``print_...``.
MAX_PROVIDER_PIECE_ID_LENGTH = 128
#: ``mailpiece_events.provider_event_id``.
MAX_PROVIDER_EVENT_ID_LENGTH = 200
#: ``mailpiece_events.detail`` is unbounded text; a printer's detail is cut to this length.
MAX_EVENT_DETAIL_LENGTH = 500
#: The printer's own status name (``postcard.failed``), quoted in a recipient's reason.
MAX_PROVIDER_STATUS_LENGTH = 64
#: No status report of this platform is older than this.
EARLIEST_EVENT_AT = datetime(2000, 1, 1, tzinfo=UTC)
#: How far ahead of our clock a printer's event time may be.
EVENT_CLOCK_SKEW = timedelta(days=1)

#: NUL, and the surrogates (a lone one has no UTF-8 form): PostgreSQL text refuses both.


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
#: Nothing will be delivered: the recipient moves Sent -> Error (a returned piece was
#: mailed, so its recipient stays Sent).
FAILED_STATUSES = frozenset({M.FAILED, M.CANCELLED})


def advances(current: MailpieceStatus, new: MailpieceStatus) -> bool:
    """Whether a reported status moves the piece forward (else it is stale or a duplicate)."""
    if current in FINAL_STATUSES:
        return False
    return RANK[new] > RANK[current]


def text_problem(text: str, *, max_length: int | None = None, empty: bool = False) -> str | None:
    """Why ``text`` cannot be stored as it is (a sentence fragment), or ``None``."""
    if not text and not empty:
        return "is empty"
    if max_length is not None and len(text) > max_length:
        return f"is {len(text)} characters long; at most {max_length} are stored"
    bad = unstorable_character(text)
    if bad:
        return f"contains {bad}, which the database cannot store"
    return None


def clip_detail(text: str) -> str:
    """An informational detail cut to :data:`MAX_EVENT_DETAIL_LENGTH` characters."""
    if len(text) <= MAX_EVENT_DETAIL_LENGTH:
        return text
    return text[: MAX_EVENT_DETAIL_LENGTH - 1] + "\u2026"


def occurred_at_problem(moment: datetime, now: datetime) -> str | None:
    """Why ``moment`` is not a storable event time (see the module docstring), or ``None``."""
    offset = moment.utcoffset()
    if offset is None:
        return "has no time zone"
    if offset:
        return "is not in UTC"
    if moment < EARLIEST_EVENT_AT:
        return f"is before {EARLIEST_EVENT_AT.date().isoformat()}"
    if moment > now + EVENT_CLOCK_SKEW:
        return "is more than a day in the future"
    return None


def failure_reason(printer: str, reported: str, detail: str | None) -> str:
    """A failed or cancelled piece's recipient reason: ``lob reported postcard.failed: ...``.

    ``reported`` is the printer's own status name when known; ``detail`` is the printer's
    detail (a tracking location, a return reason), never the recipient's data."""
    reason = f"{printer} reported {reported}"
    return f"{reason}: {detail}" if detail else reason


@dataclass(frozen=True)
class PrintedPiece:
    """What a printer says about a piece it accepted (or already had, for a key it knew)."""

    printer: str
    provider_piece_id: str
    status: MailpieceStatus
    expected_delivery_date: date | None = None
    #: The printer's price for the piece in minor units of its currency, when it says.
    cost_minor: int | None = None
    currency: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
