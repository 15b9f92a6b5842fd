"""The sandbox email sender: every report email becomes two files in a folder, and SES-shaped
delivery events go to a sink right away.

``<UTC time>-<key>.eml`` is the message as SES would have sent it (report header set, no
``Bcc``, ``Message-ID`` and ``Date`` replaced as SES replaces them; open it in a mail client);
the ``.json`` of the same name holds ``idempotency_key``, ``message_id``, ``recipients``,
``sent_at``, the notification bodies and whether they were all handed to the sink. ``<key>``
is the idempotency key; one with characters other than letters, digits, ``.``, ``_`` and
``-`` has them written as ``_`` and a short hash of the key appended (the ``.json`` keeps
the exact key). As in the alerts outbox
(:mod:`mail_pipeline.integrations.notifications.outbox`), each file is written to a temporary
file and renamed into place, the ``.eml`` first: a message is in the outbox once its ``.json``
is; temporary files start with ``.`` and are never listed.

Idempotent by key, unlike SES: a second ``send`` with a key already in the outbox returns the
first :class:`SentEmail` and writes nothing. Sends hold an exclusive lock on
``<folder>/.lock``, so processes sharing the folder (``dagster dev``) cannot both send one key.

The notification sink contract: ``notifications`` is any callable that takes one queue
message body (``str``), such as a local queue's ``send``. For each recipient, in order, it
gets one body exactly as SQS would receive it from SNS: an SNS envelope around an SES
event-publishing record (:func:`~mail_pipeline.domain.email_events.ses_notification_body`,
readable by :func:`~mail_pipeline.domain.email_events.parse_ses_notification`):

- a **Delivery** for an ordinary address;
- a **Bounce** (``Permanent``/``General``, ``smtp; 550 5.1.1 user unknown``) for an address at
  :data:`BOUNCE_DOMAIN` (or a subdomain) and for SES's mailbox simulator
  ``bounce@simulator.amazonses.com`` (``bounce+label@`` too);
- a **Complaint** (``abuse``) for :data:`COMPLAINT_DOMAIN` and ``complaint@simulator...``.

It is called synchronously, after the files are in place. If it raises, the exception
propagates and the message stays in the outbox with its notifications pending; the next
``send`` with the same key writes nothing and hands them over again (all of them: the sink is
at-least-once, and each body keeps its SNS ``MessageId``, the consumer's de-duplication key).
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from mail_pipeline.domain.email_events import (
    EmailEventKind,
    report_tag,
    ses_notification,
    ses_notification_body,
)
from mail_pipeline.integrations.email_delivery.base import (
    PreparedEmail,
    SentEmail,
    prepare_message,
    wire_bytes,
)
from mail_pipeline.integrations.files import json_documents, write_atomically

VENDOR = "email outbox"
PROVIDER = "outbox"
#: Addresses at these domains (or their subdomains) bounce / complain in the sandbox.
BOUNCE_DOMAIN = "bounce.example"
COMPLAINT_DOMAIN = "complaint.example"
#: SES's mailbox simulator: ``bounce@``, ``complaint@`` and ``success@`` behave as on SES.
SIMULATOR_DOMAIN = "simulator.amazonses.com"
#: The domain of the ``Message-ID`` the outbox gives a message (SES uses its own).
MESSAGE_ID_DOMAIN = "outbox.mail-pipeline.invalid"

NotificationSink = Callable[[str], object]

_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class OutboxEmail:
    """One report email in the outbox."""

    name: str
    idempotency_key: str
    sent: SentEmail
    sent_at: datetime
    #: The notification bodies the sink gets, in order (empty without a sink).
    notifications: tuple[str, ...]
    #: Whether every notification has been handed to the sink.
    notified: bool
    json_path: Path
    eml_path: Path


def sandbox_outcome(address: str) -> EmailEventKind:
    """What the sandbox reports for ``address``: delivered, bounced or complained."""
    local, _, domain = address.rpartition("@")
    domain = domain.lower().rstrip(".")
    if domain == SIMULATOR_DOMAIN:
        mailbox = local.lower().split("+", 1)[0]
        return {"bounce": EmailEventKind.BOUNCED, "complaint": EmailEventKind.COMPLAINED}.get(
            mailbox, EmailEventKind.DELIVERED
        )
    if domain == BOUNCE_DOMAIN or domain.endswith("." + BOUNCE_DOMAIN):
        return EmailEventKind.BOUNCED
    if domain == COMPLAINT_DOMAIN or domain.endswith("." + COMPLAINT_DOMAIN):
        return EmailEventKind.COMPLAINED
    return EmailEventKind.DELIVERED


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OutboxEmailSender:
    """Writes report emails into ``folder`` (created when missing) instead of sending them.

    ``notifications``: the sink for SES-shaped events (see the module docstring), or ``None``
    for no events. Construction does no I/O.
    """

    provider = PROVIDER

    def __init__(
        self,
        folder: str | Path,
        notifications: NotificationSink | None = None,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.folder = Path(folder)
        self.notifications = notifications
        self.clock = clock

    def __repr__(self) -> str:
        return f"OutboxEmailSender({str(self.folder)!r})"

    def send(self, message: EmailMessage, *, idempotency_key: str) -> SentEmail:
        """Put ``message`` in the outbox once per key and emit its notifications."""
        prepared = prepare_message(message, idempotency_key, vendor=VENDOR)
        with self._locked():
            entry = self._find(idempotency_key) or self._write(prepared, idempotency_key)
            if not entry.notified and self.notifications is not None:
                self._notify(entry, self.notifications)
        return entry.sent

    def entries(self) -> list[OutboxEmail]:
        return read_email_outbox(self.folder)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _find(self, key: str) -> OutboxEmail | None:
        for path in sorted(self.folder.glob(f"*-{_name_part(key)}.json")):
            if not path.name.startswith("."):
                entry = _entry(path, json.loads(path.read_text()))
                if entry.idempotency_key == key:
                    return entry
        return None

    def _write(self, prepared: PreparedEmail, key: str) -> OutboxEmail:
        sent_at = self.clock().astimezone(UTC)
        message_id = f"outbox-{uuid.uuid4()}"
        name = f"{sent_at:%Y%m%dT%H%M%S%fZ}-{_name_part(key)}"
        eml_path = self.folder / f"{name}.eml"
        json_path = self.folder / f"{name}.json"
        wire = prepared.message  # already a copy of the caller's message
        # As SES does: its own Message-ID and Date replace the sender's.
        del wire["Message-ID"]
        del wire["Date"]
        wire["Message-ID"] = f"<{message_id}@{MESSAGE_ID_DOMAIN}>"
        wire["Date"] = email.utils.format_datetime(sent_at)
        write_atomically(eml_path, wire_bytes(wire, vendor=VENDOR))
        notifications = (
            self._notification_bodies(wire, prepared, key, message_id, sent_at)
            if self.notifications is not None
            else []
        )
        document = {
            "idempotency_key": key,
            "provider": PROVIDER,
            "message_id": message_id,
            "recipients": list(prepared.recipients),
            "sent_at": sent_at.isoformat(),
            "eml": eml_path.name,
            "notifications": notifications,
            "notified": not notifications,
        }
        write_atomically(json_path, json.dumps(document, indent=2).encode())
        return _entry(json_path, document)

    @staticmethod
    def _notification_bodies(
        wire: EmailMessage,
        prepared: PreparedEmail,
        key: str,
        message_id: str,
        sent_at: datetime,
    ) -> list[str]:
        tag_name, tag_value = report_tag(key)
        headers = [(name, str(value)) for name, value in wire.items()]
        bodies = []
        for recipient in prepared.recipients:
            record = ses_notification(
                sandbox_outcome(recipient),
                message_id=message_id,
                destination=prepared.recipients,
                recipients=[recipient],
                sent_at=sent_at,
                source=prepared.sender,
                headers=headers,
                tags={tag_name: [tag_value], "ses:from-domain": [prepared.sender.split("@")[1]]},
            )
            bodies.append(ses_notification_body(record, sns_message_id=str(uuid.uuid4())))
        return bodies

    @staticmethod
    def _notify(entry: OutboxEmail, sink: NotificationSink) -> None:
        for body in entry.notifications:
            sink(body)
        document = json.loads(entry.json_path.read_text())
        document["notified"] = True
        write_atomically(entry.json_path, json.dumps(document, indent=2).encode())


def _name_part(key: str) -> str:
    """``key`` as part of a file name; a key that had to be changed gets a short hash of
    itself appended, so two keys never share a name."""
    safe = _UNSAFE_IN_NAME.sub("_", key)
    if safe == key:
        return key
    return f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _entry(json_path: Path, document: dict[str, Any]) -> OutboxEmail:
    recipients = tuple(str(address) for address in document["recipients"])
    return OutboxEmail(
        name=json_path.stem,
        idempotency_key=str(document["idempotency_key"]),
        sent=SentEmail(
            provider=str(document.get("provider", PROVIDER)),
            message_id=str(document["message_id"]),
            recipients=recipients,
        ),
        sent_at=datetime.fromisoformat(str(document["sent_at"])),
        notifications=tuple(str(body) for body in document.get("notifications", [])),
        notified=bool(document.get("notified", True)),
        json_path=json_path,
        eml_path=json_path.with_suffix(".eml"),
    )


def read_email_outbox(folder: str | Path) -> list[OutboxEmail]:
    """The report emails in ``folder``, oldest first; an outbox never written to is empty."""
    return [_entry(path, document) for path, document in json_documents(folder)]
