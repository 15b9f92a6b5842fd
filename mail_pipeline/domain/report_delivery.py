"""A report email's delivery: its statuses, what each email event does to them, and the
report's idempotency key (docs/email_delivery.md, "The double-send rule").

``generated -> sending -> sent -> delivered | bounced``; ``sending -> generated`` after a
retryable error; ``sending -> failed`` when the provider rejected the message; and
``sending -> unknown`` when the outcome is not known (no answer came, or a report was found
still ``sending`` by a later run: the process died between the two commits). An ``unknown``
report is never sent again automatically: a person checks and marks it ``sent`` or sets it
back to ``generated`` for one more send.

Only ``generated`` is sendable. Events move a report forward only: a ``Send`` event proves a
``sending``/``unknown`` report went out (``sent``); a delivery marks any report not yet
delivered or bounced ``delivered``; a bounce of any recipient marks it ``bounced``, even
after a delivery to another. Complaints, delays and rejections are recorded, not applied.
"""

from __future__ import annotations

import re
from enum import StrEnum

from mail_pipeline.domain.email_events import EmailEventKind


class ReportStatus(StrEnum):
    GENERATED = "generated"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"
    UNKNOWN = "unknown"


#: The statuses in which a report may be sent.
SENDABLE = frozenset({ReportStatus.GENERATED})

CRASHED_REASON = (
    "found still sending (the run died between recording sending and sent): it may have been "
    "sent; check the outbox or SES, then mark it sent or set it back to generated"
)

_KEY = re.compile(r"report-(\d{1,18})")


def report_key(report_id: int) -> str:
    """The idempotency key of a report's email: ``report-<id>``."""
    return f"report-{report_id}"


def report_id_of(key: str | None) -> int | None:
    """The report id in a key :func:`report_key` made; ``None`` for any other key."""
    found = _KEY.fullmatch(key or "")
    return int(found.group(1)) if found else None


def status_after_event(status: ReportStatus, kind: EmailEventKind) -> ReportStatus | None:
    """The report's status after an event of ``kind``; ``None`` when it stays as it is."""
    if kind is EmailEventKind.SENT:
        return ReportStatus.SENT if status in (ReportStatus.SENDING, ReportStatus.UNKNOWN) else None
    if kind is EmailEventKind.DELIVERED:
        done = (ReportStatus.DELIVERED, ReportStatus.BOUNCED)
        return None if status in done else ReportStatus.DELIVERED
    if kind is EmailEventKind.BOUNCED:
        return None if status is ReportStatus.BOUNCED else ReportStatus.BOUNCED
    return None
