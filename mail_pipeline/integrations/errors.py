"""Typed errors every integration client raises.

A client maps the vendor's HTTP answer to one of these at the edge, so services can decide
what to do without knowing any vendor's status codes:

- ``retryable`` errors (429, 5xx, timeouts) were already retried by the client with backoff;
  reaching the caller means the retry budget ran out, and the work should be tried again later.
- non-retryable errors (4xx) mean the request itself is wrong: retrying cannot help, and the
  recipient concerned goes to ``Error`` with ``str(error)`` as its reason.
"""

from __future__ import annotations


class IntegrationError(Exception):
    """A vendor call failed. ``str()`` is a sentence a person can read."""

    retryable: bool = False

    def __init__(
        self,
        vendor: str,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
    ) -> None:
        self.vendor = vendor
        self.message = message
        self.status_code = status_code
        self.code = code
        detail = f"{vendor}: {message}"
        if status_code is not None:
            detail += f" (HTTP {status_code}{', ' + code if code else ''})"
        super().__init__(detail)


class RequestRejected(IntegrationError):
    """The vendor refused the request as invalid (4xx other than the cases below)."""


class AuthenticationFailed(RequestRejected):
    """The credentials were refused (401/403)."""


class NotFound(RequestRejected):
    """The object does not exist at the vendor (404)."""


class Conflict(RequestRejected):
    """The vendor reports a conflict (409) that the client could not resolve as a replay."""


class RateLimited(IntegrationError):
    """429 after every retry: the vendor's rate limit held for longer than the retry budget."""

    retryable = True

    def __init__(
        self,
        vendor: str,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: int | None = 429,
        code: str | None = None,
    ) -> None:
        super().__init__(vendor, message, status_code=status_code, code=code)
        self.retry_after = retry_after


class VendorUnavailable(IntegrationError):
    """5xx, a timeout or a broken connection after every retry."""

    retryable = True
