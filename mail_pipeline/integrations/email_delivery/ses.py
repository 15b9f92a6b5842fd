"""Report emails through Amazon SES (API v1, ``SendRawEmail``), with tracked delivery.

Each send names the configuration set, when one is configured, so SES publishes the message's
Send, Delivery, Bounce, Complaint, Reject and DeliveryDelay events to the set's SNS
destination, which an SQS queue subscribes to (:mod:`mail_pipeline.domain.email_events`
parses them). The message carries the header ``X-Mail-Pipeline-Report: <key>`` and the tag of
:func:`~mail_pipeline.domain.email_events.report_tag` (tags are published only through a
configuration set).

SES has no idempotency key: every accepted call is one more email. So the client does not
retry (botocore's retries are off: a retried call after a timed-out answer would send twice),
and it says which failures are safe to try again:

- throttling (the sending rate, or the daily quota) -> :class:`RateLimited`, retryable;
- SES answered 5xx, or could not be reached at all -> :class:`VendorUnavailable`, retryable:
  SES did not take the message;
- the connection broke or timed out after the request went out ->
  :class:`~.base.SendOutcomeUnknown`, not retryable: it may have been sent;
- ``MessageRejected`` (an unverified address, the sandbox's limits), a MAIL FROM domain that
  is not verified, a configuration set that does not exist, sending paused, invalid
  parameters -> :class:`RequestRejected`;
- refused or missing credentials -> :class:`AuthenticationFailed`.

Error messages are redacted (SES quotes addresses in them).

The double-send rule, for whatever calls :meth:`SesEmailSender.send` (recommended):

1. Record the report email as ``sending``, with its idempotency key, and commit.
2. Call ``send``. On success, record ``sent`` with ``SentEmail.message_id`` and commit.
3. On a retryable error, SES did not take the message: record it as not sent (back to
   ``generated``), and send again later with the same key.
4. On :class:`RequestRejected`, record the failure with ``str(error)``; do not retry.
5. On :class:`~.base.SendOutcomeUnknown`, or for any email found still ``sending`` later (the
   process died between steps 1 and 2), do NOT send again: mark it for a person, who checks
   whether it went out (the email-events queue names the report key in a Send or Delivery
   event; the SES console; the brand) and then marks it sent or releases it for one more
   send. A missed weekly report is a nuisance; a doubled one is visible to the brand.

Notifications can arrive before step 2 commits: the consumer matches them by report key
(``EmailEvent.report_key``) or retries them later, rather than dropping an unknown id.
"""

from __future__ import annotations

import functools
import logging
import threading
from email.message import EmailMessage
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from mail_pipeline.domain.alerts import redact
from mail_pipeline.domain.email_events import report_tag
from mail_pipeline.integrations.email_delivery.base import (
    SendOutcomeUnknown,
    SentEmail,
    prepare_message,
    wire_bytes,
)
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    IntegrationError,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.queues.sqs_errors import (
    AUTHENTICATION_CODES,
    THROTTLING_CODES,
    UNAVAILABLE_CODES,
)
from mail_pipeline.integrations.ratelimit import SlidingWindowLimiter

if TYPE_CHECKING:
    from mypy_boto3_ses import SESClient
    from mypy_boto3_ses.type_defs import SendRawEmailRequestTypeDef

log = logging.getLogger(__name__)

VENDOR = "AWS SES"
PROVIDER = "ses"
_OPERATION = "SendRawEmail"
_MESSAGE_LIMIT = 300


def make_ses_client(
    *, connect_timeout: float = 5, read_timeout: float = 30, **connection: str | None
) -> SESClient:
    """A boto3 SES (v1) client that makes one attempt per call (see the module docstring).

    ``connection`` takes boto3's ``region_name``, ``endpoint_url``, ``aws_access_key_id``,
    ``aws_secret_access_key`` and ``aws_session_token``; those left ``None`` come from
    boto3's usual chain (environment, profile, role). Creating a client does no network I/O.
    """
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    return boto3.client("ses", config=config, **connection)  # type: ignore[call-overload]


def ses_error(error: BotoCoreError | ClientError) -> IntegrationError:
    """The typed error for a failed ``SendRawEmail`` (see the module docstring)."""
    if isinstance(error, ClientError):
        return _client_error(error)
    if isinstance(error, BotoConnectionError):
        return VendorUnavailable(VENDOR, f"{_OPERATION} could not reach SES: {error}")
    if isinstance(error, HTTPClientError):
        return SendOutcomeUnknown(
            VENDOR,
            f"{_OPERATION} sent the message but got no answer ({type(error).__name__}); "
            "it may have been sent, so it must not be sent again without a check",
        )
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return AuthenticationFailed(VENDOR, f"{_OPERATION}: {error}")
    return RequestRejected(VENDOR, f"{_OPERATION}: {_clip(str(error))}")


def _client_error(error: ClientError) -> IntegrationError:
    details = error.response.get("Error", {})
    code = str(details.get("Code") or "Unknown")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = f"{_OPERATION} failed: {_clip(details.get('Message') or code)}"
    if code in THROTTLING_CODES:
        return RateLimited(VENDOR, message, status_code=status, code=code)
    if code in UNAVAILABLE_CODES or (status is not None and status >= 500):
        return VendorUnavailable(VENDOR, message, status_code=status, code=code)
    if code in AUTHENTICATION_CODES or status in (401, 403):
        return AuthenticationFailed(VENDOR, message, status_code=status, code=code)
    return RequestRejected(VENDOR, message, status_code=status, code=code)


def _clip(text: str) -> str:
    text = redact(" ".join(text.split()))
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "\u2026"


class SesEmailSender:
    """Sends report emails with ``SendRawEmail``.

    Pass ``client`` (tests, or a shared client), or the connection settings from which
    :func:`make_ses_client` builds one on first use. ``configuration_set`` names the set
    whose event destination publishes the delivery events (without it, only the identity's
    notifications, if any, report on the message). ``source`` is the envelope sender
    (``Return-Path``; default: the ``From`` address). ``limiter`` holds sends to the
    account's sending rate, which SES counts in recipients per second (``GetSendQuota``'s
    ``MaxSendRate``): ``SlidingWindowLimiter(14, 1.0)`` for 14/s; it is acquired once per
    recipient. Without one, a burst over the rate fails as :class:`RateLimited`.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        client: SESClient | None = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        configuration_set: str | None = None,
        source: str | None = None,
        limiter: SlidingWindowLimiter | None = None,
    ) -> None:
        self.configuration_set = configuration_set or None
        self.source = source or None
        self._client = client
        self._make_client = functools.partial(
            make_ses_client,
            region_name=region_name,
            endpoint_url=endpoint_url,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
        )
        self.limiter = limiter
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SesEmailSender(configuration_set={self.configuration_set!r})"

    @property
    def client(self) -> SESClient:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def send(self, message: EmailMessage, *, idempotency_key: str) -> SentEmail:
        """Send ``message`` once. Not idempotent: see the double-send rule in the module
        docstring. Sets the report header on ``message`` if absent."""
        prepared = prepare_message(message, idempotency_key, vendor=VENDOR)
        tag_name, tag_value = report_tag(idempotency_key)
        request: SendRawEmailRequestTypeDef = {
            "RawMessage": {"Data": wire_bytes(prepared.message, vendor=VENDOR)},
            "Destinations": list(prepared.recipients),
            "Tags": [{"Name": tag_name, "Value": tag_value}],
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        if self.source:
            request["Source"] = self.source
        if self.limiter is not None:
            for _ in prepared.recipients:
                self.limiter.acquire()
        try:
            answer = self.client.send_raw_email(**request)
        except (BotoCoreError, ClientError) as error:
            raise ses_error(error) from error
        message_id = answer.get("MessageId")
        if not message_id:
            raise SendOutcomeUnknown(VENDOR, f"{_OPERATION} answered without a MessageId")
        log.info(
            "ses: sent report %s to %d recipient(s) as %s",
            idempotency_key,
            len(prepared.recipients),
            message_id,
        )
        return SentEmail(provider=PROVIDER, message_id=message_id, recipients=prepared.recipients)
