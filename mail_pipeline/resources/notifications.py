"""Run-failure notifications as a resource: Slack, email, or the local outbox.

Which channel is a binding, like the printers: production binds :class:`SlackNotifications`
or :class:`EmailNotifications` with secrets from the environment (``dg.EnvVar``, so the UI
shows the variable's name, never the webhook URL or the password); local and test bind
:class:`OutboxNotifications`, so nothing leaves the machine. The run-failure sensor asks
:meth:`NotificationResource.plan` what to send (the rules of ``domain.alerts``, with this
deployment's UI link) and sends each message with :meth:`NotificationResource.notifier`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Collection, Iterable

import dagster as dg
from pydantic import Field, PrivateAttr

from mail_pipeline.domain.alerts import Failure, Notification, plan_notifications
from mail_pipeline.integrations.notifications import Notifier, Outbox, SlackWebhook, SmtpEmail


class NotificationResource(dg.ConfigurableResource):
    #: The Dagster UI's base URL (``https://dagster.example.com``); messages link each run
    #: as ``{ui_base_url}/runs/{run_id}``. Without it they name the run id only.
    ui_base_url: str | None = None
    _notifier: Notifier | None = PrivateAttr(default=None)

    @abstractmethod
    def build(self) -> Notifier: ...

    def notifier(self) -> Notifier:
        if self._notifier is None:
            self._notifier = self.build()
        return self._notifier

    def plan(
        self, failures: Iterable[Failure], already_notified: Collection[str] = ()
    ) -> list[Notification]:
        """The messages for one sensor tick's failures (``domain.alerts.plan_notifications``)."""
        return plan_notifications(failures, already_notified, ui_base_url=self.ui_base_url)

    def close(self) -> None:
        """Release the channel's connections (the sensor calls it after each tick). Not a
        Dagster teardown hook: that would make every sensor context that binds this
        resource a context manager."""
        if self._notifier is not None:
            self._notifier.close()
            self._notifier = None


class SlackNotifications(NotificationResource):
    """A Slack incoming webhook. The URL is a secret: bind it with ``dg.EnvVar``."""

    #: Kept out of ``repr`` (and so out of logs that print the resource).
    webhook_url: str = Field(repr=False)
    #: ``False`` for Slack-compatible servers that take ``text`` but no Block Kit blocks.
    blocks: bool = True

    def build(self) -> Notifier:
        return SlackWebhook(self.webhook_url, blocks=self.blocks)


class EmailNotifications(NotificationResource):
    """Email through an SMTP server; STARTTLS (and login, when a user name is set)."""

    host: str
    port: int = 587
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    sender: str
    recipients: list[str]
    starttls: bool = True
    timeout_seconds: float = 15.0

    def build(self) -> Notifier:
        return SmtpEmail(
            self.host,
            self.port,
            sender=self.sender,
            recipients=self.recipients,
            username=self.username,
            password=self.password,
            starttls=self.starttls,
            timeout=self.timeout_seconds,
        )


class OutboxNotifications(NotificationResource):
    """Local and test: each message becomes a ``.json`` and an ``.eml`` file in ``folder``."""

    folder: str

    def build(self) -> Notifier:
        return Outbox(self.folder)
