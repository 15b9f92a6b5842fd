"""What every report-email sender implements, and the checks they share.

``send(message, idempotency_key=...)`` hands one ``EmailMessage`` to the provider and returns
:class:`SentEmail`, whose ``message_id`` is the id the provider's delivery notifications will
name (:mod:`mail_pipeline.domain.email_events`). Before sending, each message gets the header
``X-Mail-Pipeline-Report: <idempotency key>`` (unless it already carries that key), so a
notification can be traced to its report even before the caller has stored the id.

The sandbox checks what SES checks, so a message the outbox accepts does not fail on the first
day in production: a ``From`` header, 1-50 recipients (``To``, ``Cc`` and ``Bcc``) with ASCII
addresses (SES has no SMTPUTF8), and at most 10 MB once serialized. ``Bcc`` becomes envelope
recipients only; the header is not sent.

Failures are the project's typed errors (:mod:`mail_pipeline.integrations.errors`), plus
:class:`SendOutcomeUnknown` when the provider may have sent the message but never said so.
"""

from __future__ import annotations

import copy
import email.policy
import email.utils
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from mail_pipeline.domain.email_events import REPORT_HEADER, check_report_key
from mail_pipeline.integrations.errors import IntegrationError, RequestRejected

#: SES's limit on the recipients of one message (``To``, ``Cc`` and ``Bcc`` together).
MAX_RECIPIENTS = 50
#: SES v1's limit on a raw message, attachments included.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
#: How messages are serialized: CRLF line ends, and header lines folded at SMTP's 998-character
#: limit rather than 78, so a long report key stays one plain token (folding it would
#: RFC 2047-encode it, and the header SES reports back would no longer be the key).
WIRE_POLICY = email.policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True)
class SentEmail:
    """The provider accepted the message."""

    provider: str
    #: The provider's id for the message; its notifications name it (``mail.messageId``).
    message_id: str
    #: Every envelope recipient (``To``, ``Cc`` and ``Bcc``), in that order, once each.
    recipients: tuple[str, ...]


class EmailSender(Protocol):
    def send(self, message: EmailMessage, *, idempotency_key: str) -> SentEmail:
        """Send ``message`` once per ``idempotency_key`` as far as the provider allows (see
        each implementation), or raise an ``IntegrationError``."""
        ...


class SendOutcomeUnknown(IntegrationError):
    """The request reached the provider but no answer came back (the connection broke or
    timed out while waiting): the message may or may not have been sent.

    Not retryable: sending again could deliver the report twice. Treat it as a crash between
    recording "sending" and "sent" (see :mod:`.ses`): leave the report for a person.
    """

    retryable = False


@dataclass(frozen=True)
class PreparedEmail:
    """A copy of the message as it is to be sent (report header set, no ``Bcc``), with its
    sender and envelope recipients."""

    message: EmailMessage
    sender: str
    recipients: tuple[str, ...]


def stamp_report_header(message: EmailMessage, idempotency_key: str) -> None:
    """Set :data:`REPORT_HEADER` to the key, or check that it already is the key.

    A different key already on the message is a caller bug (the notifications would name the
    wrong report), and raises ValueError.
    """
    check_report_key(idempotency_key)
    present = message.get_all(REPORT_HEADER) or []
    if not present:
        message[REPORT_HEADER] = idempotency_key
    elif [str(value).strip() for value in present] != [idempotency_key]:
        raise ValueError(
            f"the message already carries {REPORT_HEADER} for another report; "
            f"send it with that idempotency key or remove the header"
        )


def prepare_message(message: EmailMessage, idempotency_key: str, *, vendor: str) -> PreparedEmail:
    """Stamp ``message`` (see :func:`stamp_report_header`) and check it as SES would.

    Raises ValueError for a bad key and :class:`RequestRejected` (``vendor``'s) for a message
    SES would refuse.
    """
    stamp_report_header(message, idempotency_key)
    senders = [address for _, address in email.utils.getaddresses(message.get_all("From") or [])]
    if len(senders) != 1 or not _is_address(senders[0]):
        raise RequestRejected(
            vendor, "the message needs a From header with one address", code="MissingFrom"
        )
    recipients: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        for _, address in email.utils.getaddresses(message.get_all(name) or []):
            if not _is_address(address):
                raise RequestRejected(
                    vendor,
                    f"a {name} address is not a plain ASCII address (SES takes no SMTPUTF8; "
                    "write an international domain in punycode)",
                    code="InvalidParameterValue",
                )
            if address.lower() not in (known.lower() for known in recipients):
                recipients.append(address)
    if not recipients:
        raise RequestRejected(vendor, "the message has no recipients", code="MissingRecipients")
    if len(recipients) > MAX_RECIPIENTS:
        raise RequestRejected(
            vendor,
            f"the message has {len(recipients)} recipients; the limit is {MAX_RECIPIENTS}",
            code="MessageRejected",
        )
    wire = copy.deepcopy(message)
    del wire["Bcc"]
    return PreparedEmail(message=wire, sender=senders[0], recipients=tuple(recipients))


def wire_bytes(message: EmailMessage, *, vendor: str) -> bytes:
    """``message`` serialized for sending (:data:`WIRE_POLICY`), at most 10 MB."""
    raw = message.as_bytes(policy=WIRE_POLICY)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise RequestRejected(
            vendor,
            f"the message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}",
            code="MessageRejected",
        )
    return raw


def _is_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return (
        bool(at and local and "." in domain.strip("."))
        and address.isascii()
        and address.isprintable()
        and " " not in address
    )
