"""Small helpers the three printer clients share: answers, timestamps, headers, rate limits.

Nothing here knows a vendor; each client passes its own name so errors read
"lob: ..." or "stannp: ...".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from mail_pipeline.integrations.errors import VendorUnavailable
from mail_pipeline.integrations.printers.base import MalformedWebhook
from mail_pipeline.integrations.ratelimit import SlidingWindowLimiter

#: Every client runs at this fraction of the vendor's published limit unless told otherwise.
DEFAULT_LIMIT_FRACTION = 0.95


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header value by case-insensitive name (ingresses lower-case header names)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def response_json(vendor: str, response: httpx.Response) -> dict[str, Any]:
    """The JSON object a vendor answered with.

    A success whose body is not a JSON object is treated as the vendor being unwell
    (retryable): every create carries an idempotency key, so asking again is safe.
    """
    try:
        body = response.json()
    except ValueError as exc:
        raise VendorUnavailable(
            vendor, "answered with a body that is not JSON", status_code=response.status_code
        ) from exc
    if not isinstance(body, dict):
        raise VendorUnavailable(
            vendor, "answered with JSON that is not an object", status_code=response.status_code
        )
    return body


def error_body(response: httpx.Response) -> Any:
    """The decoded error body, or ``None`` when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def webhook_json(vendor: str, body: str) -> dict[str, Any]:
    """A webhook body as a JSON object, or :class:`MalformedWebhook` saying why not."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise MalformedWebhook(f"{vendor} webhook body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedWebhook(f"{vendor} webhook body is not a JSON object")
    return data


def parse_timestamp(value: Any, *, what: str) -> datetime:
    """An aware UTC datetime from ISO 8601, ``YYYY-MM-DD HH:MM:SS`` or epoch seconds.

    Naive values (Stannp's ``"2024-01-15 10:30:00"``) are taken as UTC.
    """
    if isinstance(value, bool) or value is None or value == "":
        raise MalformedWebhook(f"{what} is missing")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), tz=UTC)
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise MalformedWebhook(f"{what} {value!r} is not a timestamp") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise MalformedWebhook(f"{what} {value!r} is not a timestamp")


def iso_utc(epoch_seconds: float, *, milliseconds: bool = False) -> str:
    """``2024-01-15T10:30:00Z`` (or ``...00.000Z``) for an epoch time."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    if milliseconds:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_limiter(
    limiter: SlidingWindowLimiter | None,
    rate_limit: tuple[int, float] | None,
    fraction: float,
) -> SlidingWindowLimiter | None:
    """The given limiter, else one at ``fraction`` of ``rate_limit`` on the real clock, else
    none. (A limiter on a fake clock is built by the caller and passed as ``limiter``.)"""
    if limiter is not None:
        return limiter
    if rate_limit is None:
        return None
    calls, seconds = rate_limit
    return SlidingWindowLimiter(calls, seconds, fraction=fraction)


def split_name(name: str) -> tuple[str, str]:
    """``("Jane Q.", "Doe")`` for "Jane Q. Doe": printers that want first/last names get them."""
    parts = name.strip().rsplit(" ", 1)
    if len(parts) == 1:
        return "", parts[0]
    return parts[0], parts[1]
