"""The local notification channel: every message becomes two files in a folder.

``<UTC time>-<run|digest>-<random>.json`` holds ``subject``, ``body``, ``mrkdwn``,
``run_ids``, ``digest`` and ``sent_at``; the ``.eml`` of the same name is the email that SMTP
would have sent (open it in a mail client). Names start with the time to the microsecond,
so listing the folder in name order lists the messages in the order they were sent.

Each file is written to a temporary file in the same folder and renamed into place, the
``.eml`` before the ``.json``: a reader never sees half a file, and a message is in the
outbox once its ``.json`` is (a crash in between leaves an ``.eml`` that no listing shows).
Temporary files start with ``.`` and are never listed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mail_pipeline.domain.alerts import Notification
from mail_pipeline.integrations.files import json_documents, write_atomically
from mail_pipeline.integrations.notifications.base import Notifier
from mail_pipeline.integrations.notifications.email import build_email

OUTBOX_SENDER = "mail-pipeline@localhost"
OUTBOX_RECIPIENTS = ("operations@localhost",)


@dataclass(frozen=True)
class OutboxEntry:
    """One message in the outbox."""

    name: str
    subject: str
    body: str
    mrkdwn: str
    run_ids: tuple[str, ...]
    digest: bool
    sent_at: datetime
    json_path: Path
    eml_path: Path

    def notification(self) -> Notification:
        return Notification(self.subject, self.body, self.mrkdwn, self.run_ids, self.digest)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Outbox(Notifier):
    """Writes notifications into ``folder`` (created when missing) instead of sending them."""

    def __init__(
        self,
        folder: str | Path,
        *,
        sender: str = OUTBOX_SENDER,
        recipients: Sequence[str] = OUTBOX_RECIPIENTS,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.folder = Path(folder)
        self.sender = sender
        self.recipients = tuple(recipients)
        self.clock = clock

    def send(self, notification: Notification) -> None:
        self.write(notification)

    def write(self, notification: Notification) -> OutboxEntry:
        """Put ``notification`` in the outbox and return what was written."""
        sent_at = self.clock().astimezone(UTC)
        kind = "digest" if notification.digest else "run"
        name = f"{sent_at:%Y%m%dT%H%M%S%fZ}-{kind}-{secrets.token_hex(4)}"
        self.folder.mkdir(parents=True, exist_ok=True)
        eml_path = self.folder / f"{name}.eml"
        json_path = self.folder / f"{name}.json"
        message = build_email(
            notification, sender=self.sender, recipients=self.recipients, date=sent_at
        )
        write_atomically(eml_path, message.as_bytes())
        document = {
            "subject": notification.subject,
            "body": notification.body,
            "mrkdwn": notification.mrkdwn,
            "run_ids": list(notification.run_ids),
            "digest": notification.digest,
            "sent_at": sent_at.isoformat(),
            "eml": eml_path.name,
        }
        write_atomically(json_path, json.dumps(document, indent=2).encode())
        return _entry(json_path, document)

    def entries(self) -> list[OutboxEntry]:
        return read_outbox(self.folder)


def _entry(json_path: Path, document: dict[str, Any]) -> OutboxEntry:
    return OutboxEntry(
        name=json_path.stem,
        subject=str(document["subject"]),
        body=str(document["body"]),
        mrkdwn=str(document.get("mrkdwn", "")),
        run_ids=tuple(str(run_id) for run_id in document["run_ids"]),
        digest=bool(document.get("digest", False)),
        sent_at=datetime.fromisoformat(str(document["sent_at"])),
        json_path=json_path,
        eml_path=json_path.with_suffix(".eml"),
    )


def read_outbox(folder: str | Path) -> list[OutboxEntry]:
    """The messages in ``folder``, oldest first; an outbox never written to is empty."""
    return [_entry(path, document) for path, document in json_documents(folder)]
