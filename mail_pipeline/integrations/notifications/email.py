"""Notifications by email, through an SMTP server, with the standard library.

One connection per message: ``EHLO``, ``STARTTLS`` and ``EHLO`` again when ``starttls`` is set
(the default; the server's certificate is verified), ``AUTH`` when a user name is configured,
then the message to every recipient. Every socket operation has ``timeout`` seconds.
Credentials are refused without STARTTLS unless the server is on this machine, so a password
never crosses a network in clear text. Implicit TLS (SMTPS, port 465) is not supported: use
the submission port (587) with STARTTLS.

SMTP answers become the project's typed errors: 4xx replies, timeouts and broken
connections are :class:`VendorUnavailable` (``retryable``: a later tick sends again); refused
credentials are :class:`AuthenticationFailed`; 5xx replies and missing server features
(STARTTLS, AUTH) are :class:`RequestRejected`. There are no retries inside ``send``: the
caller keeps the runs unnotified, and its next tick is the retry. Server replies quoted in an
error are redacted (no addresses, nothing that looks like a credential). When some but not
all recipients are refused the message went out, so ``send`` returns and logs how many were
refused (a resend would reach the others twice).
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import smtplib
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage

from mail_pipeline.domain.alerts import Notification, redact
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    IntegrationError,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.notifications.base import Notifier

log = logging.getLogger(__name__)

VENDOR = "smtp"
DEFAULT_TIMEOUT = 15.0
#: The header that names the runs a message reports.
RUNS_HEADER = "X-Mail-Pipeline-Runs"
_REPLY_LIMIT = 200


def build_email(
    notification: Notification,
    *,
    sender: str,
    recipients: Sequence[str],
    date: datetime | None = None,
) -> EmailMessage:
    """The plain-text email of ``notification`` (what is sent, and the outbox's ``.eml``)."""
    message = EmailMessage()
    message["Subject"] = notification.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = email.utils.format_datetime(date or datetime.now(UTC))
    # An explicit domain: make_msgid() would otherwise ask DNS for this host's name.
    message["Message-ID"] = email.utils.make_msgid(
        "alert", domain=sender.rpartition("@")[2] or "localhost"
    )
    message[RUNS_HEADER] = " ".join(notification.run_ids)
    message.set_content(notification.body)
    return message


def _reply(exc: smtplib.SMTPResponseException) -> str:
    raw = exc.smtp_error
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return redact(" ".join(text.split()))[:_REPLY_LIMIT]


def smtp_error(exc: OSError) -> IntegrationError:
    """The typed error for what ``smtplib`` raised (its errors are all ``OSError``s)."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return AuthenticationFailed(
            VENDOR, f"the server refused the login ({exc.smtp_code} {_reply(exc)})"
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return RequestRejected(VENDOR, f"the server lacks a configured feature: {exc}")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        message = f"every recipient was refused (SMTP {', '.join(map(str, codes))})"
        if all(400 <= code < 500 for code in codes):
            return VendorUnavailable(VENDOR, message)
        return RequestRejected(VENDOR, message)
    if isinstance(exc, smtplib.SMTPResponseException):
        message = f"the server answered {exc.smtp_code} {_reply(exc)}"
        if isinstance(exc, smtplib.SMTPConnectError) or 400 <= exc.smtp_code < 500:
            return VendorUnavailable(VENDOR, message)
        return RequestRejected(VENDOR, message)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return VendorUnavailable(VENDOR, "the server closed the connection")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return RequestRejected(VENDOR, f"the server's certificate was refused: {exc.reason}")
    if isinstance(exc, smtplib.SMTPException):
        return RequestRejected(VENDOR, redact(str(exc))[:_REPLY_LIMIT])
    if isinstance(exc, TimeoutError):
        return VendorUnavailable(VENDOR, "timed out")
    return VendorUnavailable(VENDOR, f"connection failed ({type(exc).__name__})")


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpEmail(Notifier):
    """Sends notifications as plain-text email to a fixed list of recipients."""

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        sender: str,
        recipients: Sequence[str],
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not host:
            raise ValueError("an SMTP notifier needs the server's host name")
        if not sender or not recipients:
            raise ValueError("an SMTP notifier needs a sender and at least one recipient")
        if bool(username) != bool(password):
            raise ValueError("SMTP login needs both a user name and a password")
        if username and not starttls and not _is_local(host):
            raise ValueError(
                "SMTP login without STARTTLS would send the password in clear text; "
                "enable starttls (or use a relay on this machine)"
            )
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = tuple(recipients)
        self.username = username or None
        self._password = password or None
        self.starttls = starttls
        self.timeout = timeout
        self.ssl_context = ssl_context

    def __repr__(self) -> str:
        return (
            f"SmtpEmail({self.host}:{self.port}, starttls={self.starttls}, "
            f"login={'yes' if self.username else 'no'}, recipients={len(self.recipients)})"
        )

    def send(self, notification: Notification) -> None:
        """Send ``notification`` to every recipient; raise typed if no one got it."""
        message = build_email(notification, sender=self.sender, recipients=self.recipients)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=self.ssl_context or ssl.create_default_context())
                    smtp.ehlo()
                if self.username and self._password:
                    smtp.login(self.username, self._password)
                refused = smtp.send_message(
                    message, from_addr=self.sender, to_addrs=list(self.recipients)
                )
        except OSError as exc:
            raise smtp_error(exc) from exc
        if refused:
            log.warning(
                "smtp: %d of %d recipients refused %r",
                len(refused),
                len(self.recipients),
                notification.subject,
            )
        log.info("smtp: sent %r for %d run(s)", notification.subject, len(notification.run_ids))
