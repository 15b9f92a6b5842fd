"""Where run-failure notifications go: a Slack incoming webhook (:mod:`.slack`), email over
SMTP (:mod:`.email`), or the local outbox folder (:mod:`.outbox`), all :class:`Notifier`s.

What to send is decided by :mod:`mail_pipeline.domain.alerts`.
"""

from mail_pipeline.integrations.notifications.base import Notifier
from mail_pipeline.integrations.notifications.email import SmtpEmail, build_email
from mail_pipeline.integrations.notifications.outbox import Outbox, OutboxEntry, read_outbox
from mail_pipeline.integrations.notifications.slack import SlackWebhook, mask_webhook_url

__all__ = [
    "Notifier",
    "Outbox",
    "OutboxEntry",
    "SlackWebhook",
    "SmtpEmail",
    "build_email",
    "mask_webhook_url",
    "read_outbox",
]
