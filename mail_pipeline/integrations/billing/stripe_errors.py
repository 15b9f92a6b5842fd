"""Stripe SDK errors as the project's typed errors, shared by the v1 and v2 meter calls."""

from __future__ import annotations

import stripe

from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    Conflict,
    IntegrationError,
    NotFound,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)

VENDOR = "stripe"


def error_code(exc: stripe.StripeError) -> str | None:
    """Stripe's ``error.code``. The SDK fills ``exc.code`` for some error classes only (a v2
    401 such as ``billing_meter_event_session_expired`` arrives as an ``AuthenticationError``
    without it), so the body is read as well."""
    if exc.code:
        return exc.code
    body = exc.json_body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return str(code) if code else None
    return None


def _message(exc: stripe.StripeError) -> str:
    text = exc.user_message or str(exc) or type(exc).__name__
    param = getattr(exc, "param", None)
    return f"{text} (param: {param})" if param else text


def map_stripe_error(exc: stripe.StripeError) -> IntegrationError:
    """The project's typed error for a Stripe SDK error (after retries, where retryable)."""
    status = exc.http_status
    code = error_code(exc)
    message = _message(exc)
    if isinstance(exc, stripe.RateLimitError):
        return RateLimited(VENDOR, message, code=code or "rate_limit")
    if isinstance(exc, stripe.APIConnectionError):
        return VendorUnavailable(VENDOR, message, code=code)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return AuthenticationFailed(VENDOR, message, status_code=status, code=code)
    if isinstance(exc, stripe.IdempotencyError):
        return Conflict(VENDOR, message, status_code=status, code=code or "idempotency_error")
    if status == 404:
        return NotFound(VENDOR, message, status_code=status, code=code)
    if status is not None and (status >= 500 or status == 409):
        return VendorUnavailable(VENDOR, message, status_code=status, code=code)
    return RequestRejected(VENDOR, message, status_code=status, code=code)


def retryable(exc: stripe.StripeError) -> bool:
    """Rate limits, connection failures and timeouts, 409 and 5xx: worth another attempt."""
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    status = exc.http_status
    return (
        isinstance(exc, stripe.APIError) and status is not None and (status >= 500 or status == 409)
    )
