"""Report emails: Amazon SES in production (:mod:`.ses`), and in the sandbox a local outbox
folder that emits SES-shaped delivery events (:mod:`.outbox`); both are an :class:`EmailSender`.

What the delivery events mean is read by :mod:`mail_pipeline.domain.email_events`.
"""

from mail_pipeline.integrations.email_delivery.base import (
    EmailSender,
    SendOutcomeUnknown,
    SentEmail,
)
from mail_pipeline.integrations.email_delivery.outbox import (
    OutboxEmail,
    OutboxEmailSender,
    read_email_outbox,
)
from mail_pipeline.integrations.email_delivery.ses import SesEmailSender, make_ses_client

__all__ = [
    "EmailSender",
    "OutboxEmail",
    "OutboxEmailSender",
    "SendOutcomeUnknown",
    "SentEmail",
    "SesEmailSender",
    "make_ses_client",
    "read_email_outbox",
]
