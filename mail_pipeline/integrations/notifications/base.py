"""What every notification channel implements: send one message, or raise a typed error.

A sender raises one of :mod:`~mail_pipeline.integrations.errors`' errors when the message was
not delivered: ``retryable`` ones (rate limit, outage, timeout) after its own bounded retries,
others (a refused payload, a wrong webhook, refused credentials) at once. Either way the
caller keeps the runs unnotified and may try again on a later tick; returning normally means
the channel accepted the message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from mail_pipeline.domain.alerts import Notification


class Notifier(ABC):
    @abstractmethod
    def send(self, notification: Notification) -> None:
        """Deliver ``notification`` or raise an ``IntegrationError``."""

    def close(self) -> None:  # noqa: B027 - most channels hold nothing open
        """Release connections; the default holds none."""
