"""Slack (or a Slack-compatible chat) through an incoming webhook.

``POST <webhook URL>`` with ``{"text": ..., "blocks": [...]}`` as JSON. Slack answers
``200 ok`` as plain text; errors are plain-text reasons with a status (Slack's changelog
"Improving error conditions for Incoming Webhooks", 2016-05-17, and the webhook docs):

=====  ================================================================================
400    ``invalid_payload``, ``no_text``, ``invalid_blocks``, ``user_not_found``
403    ``action_prohibited`` (a workspace restriction), ``invalid_token``
404    ``channel_not_found``, ``no_service`` (the webhook was revoked or never existed),
       ``no_team``
410    ``channel_is_archived``
429    rate limited (about one message per second per webhook, short bursts allowed),
       with ``Retry-After`` in seconds
500    ``rollup_error`` and other outages
=====  ================================================================================

429, 5xx, timeouts and broken connections are retried with jittered exponential backoff,
honouring ``Retry-After``, at most ``retry.max_attempts`` times and never waiting longer than
``max_total_wait`` seconds in all (this runs inside a sensor tick, which has a deadline). A
``Retry-After`` beyond ``retry.max_retry_after`` is not waited out: the call raises
:class:`RateLimited` with it. Permanent errors raise at once with Slack's reason as ``code``.

A webhook has no idempotency key, so a retry after a timeout whose request did arrive posts
the message twice. For an alert that is the right trade: a duplicate beats a lost alert.

The webhook URL is a credential (whoever has it can post into the channel). It never appears
in an exception, a log line of this module or ``repr``; :func:`mask_webhook_url` is what is
shown instead, and httpx's own request log line is masked too (:class:`_MaskWebhookUrls`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from mail_pipeline.domain.alerts import Notification, redact
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    IntegrationError,
    NotFound,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import RETRYABLE_STATUSES, RetryPolicy, retry_after_seconds
from mail_pipeline.integrations.notifications.base import Notifier

log = logging.getLogger(__name__)

VENDOR = "slack"
DEFAULT_RETRY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=8.0, max_retry_after=20.0)
#: Seconds one ``send`` may spend waiting between attempts, in all.
DEFAULT_MAX_TOTAL_WAIT = 20.0
#: Slack's limits: a header block's text, a section block's text, a message's blocks, and the
#: top-level ``text`` (longer is truncated by Slack; we cut it ourselves).
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
MAX_BLOCKS = 50
TEXT_LIMIT = 40_000
_REASON_LIMIT = 200


def mask_webhook_url(url: str) -> str:
    """What may be shown of a webhook URL: its scheme and host."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/***" if parts.hostname else "***"


class _MaskWebhookUrls(logging.Filter):
    """Masks the registered webhook URLs in records of the ``httpx`` logger.

    httpx logs every request's URL at INFO (``HTTP Request: POST <url> "HTTP/1.1 200 OK"``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._urls: set[str] = set()
        self._lock = threading.Lock()

    def register(self, url: str) -> None:
        with self._lock:
            # httpx logs its own rendering of the URL, which may normalise the one given.
            self._urls.update((url, str(httpx.URL(url))))

    def filter(self, record: logging.LogRecord) -> bool:
        if self._urls and isinstance(record.args, tuple):
            record.args = tuple(
                mask_webhook_url(str(arg)) if str(arg) in self._urls else arg for arg in record.args
            )
        return True


_httpx_mask = _MaskWebhookUrls()


def _install_httpx_mask(url: str) -> None:
    _httpx_mask.register(url)
    httpx_log = logging.getLogger("httpx")
    if _httpx_mask not in httpx_log.filters:
        httpx_log.addFilter(_httpx_mask)


def slack_payload(notification: Notification, *, blocks: bool = True) -> dict[str, Any]:
    """The webhook body: mrkdwn ``text`` (what Slack-compatible servers without blocks show,
    and Slack's notification fallback) and, for Slack, a header and section blocks."""
    payload: dict[str, Any] = {"text": _cut(notification.mrkdwn, TEXT_LIMIT)}
    if blocks:
        sections = [
            {"type": "section", "text": {"type": "mrkdwn", "text": chunk}}
            for chunk in _chunks(notification.mrkdwn, SECTION_LIMIT)
        ][: MAX_BLOCKS - 1]
        header = {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(notification.subject, HEADER_LIMIT)},
        }
        payload["blocks"] = [header, *sections]
    return payload


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chunks(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, split at line ends where possible."""
    chunks: list[str] = []
    current = ""
    for line in text.splitlines():
        while len(line) > limit:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current.strip():
        chunks.append(current)
    return [chunk for chunk in chunks if chunk.strip()] or [" "]


def slack_error(response: httpx.Response) -> IntegrationError:
    """The typed error for Slack's final answer, with Slack's reason as ``code``."""
    status = response.status_code
    reason = redact(" ".join(response.text.split()))[:_REASON_LIMIT] or response.reason_phrase
    message = f"incoming webhook refused the message: {reason}"
    if status == 429:
        return RateLimited(
            VENDOR,
            f"incoming webhook rate limited: {reason}",
            retry_after=retry_after_seconds(response),
            code=reason,
        )
    if status >= 500:
        return VendorUnavailable(
            VENDOR, f"incoming webhook unavailable: {reason}", status_code=status, code=reason
        )
    kind: type[RequestRejected]
    if status in (401, 403):
        kind = AuthenticationFailed
    elif status in (404, 410):
        kind = NotFound
    else:
        kind = RequestRejected
    return kind(VENDOR, message, status_code=status, code=reason)


class SlackWebhook(Notifier):
    """Posts notifications to one Slack incoming webhook."""

    def __init__(
        self,
        webhook_url: str,
        *,
        blocks: bool = True,
        timeout: httpx.Timeout | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_total_wait: float = DEFAULT_MAX_TOTAL_WAIT,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``blocks=False`` sends ``text`` only, for Slack-compatible servers without Block
        Kit. ``sleep`` and ``clock`` are injectable so tests see every wait."""
        parts = urlsplit(webhook_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("the Slack webhook URL must be an http(s) URL")
        self._url = webhook_url
        self.blocks = blocks
        self.retry = retry
        self.max_total_wait = max_total_wait
        self.sleep = sleep
        self.clock = clock
        _install_httpx_mask(webhook_url)
        self._client = httpx.Client(
            timeout=timeout or httpx.Timeout(10.0, connect=5.0),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"SlackWebhook({mask_webhook_url(self._url)})"

    def send(self, notification: Notification) -> None:
        """Post ``notification``; return once Slack answered 2xx, raise typed otherwise."""
        body = json.dumps(slack_payload(notification, blocks=self.blocks)).encode()
        deadline = self.clock() + self.max_total_wait
        attempt = 0
        while True:
            attempt += 1
            failure: IntegrationError
            wait: float | None = None
            try:
                response = self._client.post(
                    self._url, content=body, headers={"content-type": "application/json"}
                )
            except httpx.TimeoutException as exc:
                failure = VendorUnavailable(
                    VENDOR, f"incoming webhook timed out ({type(exc).__name__})"
                )
            except httpx.TransportError as exc:
                failure = VendorUnavailable(
                    VENDOR, f"incoming webhook unreachable ({type(exc).__name__})"
                )
            else:
                if response.is_success:
                    log.info(
                        "slack: posted %r for %d run(s)",
                        notification.subject,
                        len(notification.run_ids),
                    )
                    return
                failure = slack_error(response)
                if response.status_code not in RETRYABLE_STATUSES:
                    raise failure
                wait = retry_after_seconds(response)
                if wait is not None and wait > self.retry.max_retry_after:
                    raise failure
            if attempt >= self.retry.max_attempts:
                raise failure
            delay = wait if wait is not None else self.retry.backoff(attempt)
            if self.clock() + delay > deadline:
                raise failure
            log.info("slack: %s; retry %d in %.2fs", failure.message, attempt, delay)
            self.sleep(delay)

    def close(self) -> None:
        self._client.close()
