"""Map botocore's SQS errors to the project's typed integration errors.

botocore has already retried throttling, 5xx and connection failures (standard retry mode,
see :func:`~mail_pipeline.integrations.queues.sqs_setup.make_sqs_client`), so what arrives
here is final for this attempt:

- throttling -> :class:`RateLimited` (retryable),
- 5xx, timeouts, broken connections -> :class:`VendorUnavailable` (retryable),
- refused or missing credentials -> :class:`AuthenticationFailed`,
- a queue that does not exist -> :class:`NotFound`,
- a queue that already exists differently, a purge already under way -> :class:`Conflict`,
- anything else the caller sent wrong -> :class:`RequestRejected`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    Conflict,
    IntegrationError,
    NotFound,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)

VENDOR = "AWS SQS"

#: botocore error codes shared by every AWS service the project calls (SQS, SES).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)
UNAVAILABLE_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
AUTHENTICATION_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "InvalidSecurity",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
_NOT_FOUND = frozenset({"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"})
_CONFLICT = frozenset(
    {
        "QueueAlreadyExists",
        "QueueNameExists",
        "QueueDeletedRecently",
        "AWS.SimpleQueueService.QueueDeletedRecently",
        "PurgeQueueInProgress",
        "AWS.SimpleQueueService.PurgeQueueInProgress",
    }
)


def map_error(error: BotoCoreError | ClientError, operation: str) -> IntegrationError:
    """The typed error for a failed SQS call; ``operation`` names the call in the message."""
    if isinstance(error, ClientError):
        return _map_client_error(error, operation)
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return VendorUnavailable(VENDOR, f"{operation} could not reach SQS: {error}")
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return AuthenticationFailed(VENDOR, f"{operation}: {error}")
    return RequestRejected(VENDOR, f"{operation}: {error}")


def _map_client_error(error: ClientError, operation: str) -> IntegrationError:
    details = error.response.get("Error", {})
    # Since the JSON protocol, ``Code`` may be the long legacy name and ``QueryErrorCode``
    # the short one (or the other way round); match on both, report the short one.
    codes = {details.get("Code", ""), details.get("QueryErrorCode", "")} - {""}
    code = str(details.get("QueryErrorCode") or details.get("Code") or "Unknown")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = f"{operation} failed: {details.get('Message') or code}"
    if codes & THROTTLING_CODES:
        return RateLimited(VENDOR, message, status_code=status, code=code)
    if codes & UNAVAILABLE_CODES or (status is not None and status >= 500):
        return VendorUnavailable(VENDOR, message, status_code=status, code=code)
    if codes & AUTHENTICATION_CODES or status in (401, 403):
        return AuthenticationFailed(VENDOR, message, status_code=status, code=code)
    if codes & _NOT_FOUND:
        return NotFound(VENDOR, message, status_code=status, code=code)
    if codes & _CONFLICT:
        return Conflict(VENDOR, message, status_code=status, code=code)
    return RequestRejected(VENDOR, message, status_code=status, code=code)


@contextmanager
def translated(operation: str) -> Iterator[None]:
    """Run an SQS call, raising the typed error (chained to botocore's) if it fails."""
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise map_error(error, operation) from error
