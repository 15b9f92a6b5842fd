"""What the mailing service needs from a printer, whoever the printer is.

Every create carries an idempotency key derived from the recipient. The contract for each
implementation:

- ``create_postcard`` with a key the printer has already seen returns the *original* piece
  (Lob answers 200 with it, Stannp 409 with it, IntelliPrint is asked by reference first);
  it never creates a second one.
- ``find_postcard`` asks the printer whether a piece with this key exists (for recovery after
  the printer's own 24 h idempotency window), returning ``None`` only when the printer
  positively has none within what it can search: Lob and IntelliPrint search all their
  pieces, Stannp's reporting list only the last ``lookback_days`` (60 by default). A mailing
  batch resumed more than 60 days after a Stannp create could therefore print again; recovery
  resumes a batch within minutes, so that window is never reached in practice.
- Webhooks (in transit, delivered, returned, ...) are parsed by ``parse_webhook`` into
  :class:`StatusUpdate` values in the shared :class:`MailpieceStatus` vocabulary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from mail_pipeline.domain.addresses import Address
from mail_pipeline.domain.mailpieces import (
    MAX_EVENT_DETAIL_LENGTH,
    MAX_PRINTER_NAME_LENGTH,
    MAX_PROVIDER_EVENT_ID_LENGTH,
    MAX_PROVIDER_PIECE_ID_LENGTH,
    MAX_PROVIDER_STATUS_LENGTH,
    MailpieceStatus,
    PrintedPiece,
    occurred_at_problem,
    text_problem,
)


@dataclass(frozen=True)
class PostcardRequest:
    idempotency_key: str
    recipient_id: int
    campaign_id: int
    organization_id: int
    to: Address
    front_url: str
    back_url: str
    #: "first_class" or "standard"
    postage: str = "first_class"
    #: "4x6" (US) or "A6"/"A5" (UK); each printer maps it to its own size names.
    size: str = "4x6"
    #: Printers that want a return address get the organization's.
    sender: Address | None = None
    test_mode: bool = True


class MalformedWebhook(ValueError):
    """A webhook that cannot be parsed or verified; the message says why."""


@dataclass(frozen=True)
class StatusUpdate:
    """One status a printer reported, in values the database stores as they are.

    Construction checks every field against its column
    (:mod:`mail_pipeline.domain.mailpieces`: lengths, characters PostgreSQL refuses, an aware
    UTC ``occurred_at`` inside the accepted window) and raises :class:`MalformedWebhook`
    saying which field and why: a webhook that would fail in the database is refused while
    it is parsed, and goes to the dead-letter queue alone. ``detail`` must already be cut to
    its bound (the parsers use :func:`~mail_pipeline.domain.mailpieces.clip_detail`).
    """

    printer: str
    provider_piece_id: str
    #: Unique per event at the printer: Lob ``evt_...``, Svix ``msg_...``, Stannp
    #: ``stannp:<piece>:<status>`` (Stannp sends no event id).
    provider_event_id: str
    status: MailpieceStatus
    occurred_at: datetime
    detail: str | None = None
    #: The printer's own name for the status (``postcard.failed``), for people to read.
    provider_status: str | None = None

    def __post_init__(self) -> None:
        problem = status_update_problem(self)
        if problem is not None:
            raise MalformedWebhook(f"{_shown(self.printer)} webhook: {problem}")


#: Each text field of a :class:`StatusUpdate`: what people call it, and its bound.
_TEXT_FIELDS: tuple[tuple[str, str, int, bool], ...] = (
    ("printer", "printer name", MAX_PRINTER_NAME_LENGTH, True),
    ("provider_piece_id", "piece id", MAX_PROVIDER_PIECE_ID_LENGTH, True),
    ("provider_event_id", "event id", MAX_PROVIDER_EVENT_ID_LENGTH, True),
    ("detail", "detail", MAX_EVENT_DETAIL_LENGTH, False),
    ("provider_status", "status name", MAX_PROVIDER_STATUS_LENGTH, False),
)


def status_update_problem(update: StatusUpdate, *, now: datetime | None = None) -> str | None:
    """Why ``update`` cannot be stored as it is, or ``None`` (see :class:`StatusUpdate`)."""
    for attribute, label, bound, required in _TEXT_FIELDS:
        value = getattr(update, attribute)
        if value is None and not required:
            continue
        if not isinstance(value, str):
            return f"the {label} is {type(value).__name__}, not text"
        problem = text_problem(value, max_length=bound)
        if problem is not None:
            return f"the {label} {problem}"
    if not isinstance(update.status, MailpieceStatus):
        return f"the status {_shown(update.status)} is not a mailpiece status"
    if not isinstance(update.occurred_at, datetime):
        return f"the event time is {type(update.occurred_at).__name__}, not a time"
    problem = occurred_at_problem(update.occurred_at, now or datetime.now(UTC))
    if problem is not None:
        return f"the event time {update.occurred_at.isoformat()} {problem}"
    return None


def _shown(value: object, limit: int = 40) -> str:
    """A short, printable-ASCII rendering of a value for a reason."""
    text = value if isinstance(value, str) else type(value).__name__
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return cut.encode("unicode_escape").decode("ascii")


@dataclass(frozen=True)
class WebhookEnvelope:
    """What the webhook ingress puts on the status queue: the raw body, untouched, and the
    headers that carry its signature (re-serialized JSON would not verify)."""

    printer: str
    headers: Mapping[str, str]
    body: str
    received_at: str | None = None


class Printer(ABC):
    name: str

    @abstractmethod
    def create_postcard(self, request: PostcardRequest) -> PrintedPiece: ...

    @abstractmethod
    def find_postcard(self, idempotency_key: str, recipient_id: int) -> PrintedPiece | None: ...

    @abstractmethod
    def cancel_postcard(self, provider_piece_id: str) -> None: ...

    @abstractmethod
    def parse_webhook(self, envelope: WebhookEnvelope) -> list[StatusUpdate]: ...
