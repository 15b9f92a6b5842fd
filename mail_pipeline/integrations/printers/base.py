"""What the mailing service needs from a printer, whoever the printer is.

Every create carries an idempotency key derived from the recipient. The contract for each
implementation:

- ``create_postcard`` with a key the printer has already seen returns the *original* piece
  (Lob answers 200 with it, Stannp 409 with it, IntelliPrint is asked by reference first);
  it never creates a second one.
- ``find_postcard`` asks the printer whether a piece with this key exists (for recovery after
  the printer's own 24 h idempotency window), returning ``None`` only when the printer
  positively has none.
- Webhooks (in transit, delivered, returned, ...) are parsed by ``parse_webhook`` into
  :class:`StatusUpdate` values in the shared :class:`MailpieceStatus` vocabulary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from mail_pipeline.domain.addresses import Address
from mail_pipeline.domain.mailpieces import MailpieceStatus


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


@dataclass(frozen=True)
class PrintedPiece:
    printer: str
    provider_piece_id: str
    status: MailpieceStatus
    expected_delivery_date: date | None = None
    #: The printer's price for the piece in minor units of its currency, when it says.
    cost_minor: int | None = None
    currency: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusUpdate:
    printer: str
    provider_piece_id: str
    #: Unique per event at the printer: Lob ``evt_...``, Svix ``msg_...``, Stannp
    #: ``stannp:<piece>:<status>`` (Stannp sends no event id).
    provider_event_id: str
    status: MailpieceStatus
    occurred_at: datetime
    detail: str | None = None


class MalformedWebhook(ValueError):
    """A webhook that cannot be parsed or verified; the message says why."""


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
