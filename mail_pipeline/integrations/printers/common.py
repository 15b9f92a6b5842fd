"""Small helpers the three printer clients share: answers, timestamps, headers, rate limits.

Nothing here knows a vendor; each client passes its own name so errors read
"lob: ..." or "stannp: ...".

The webhook helpers turn whatever a (validly signed) body holds into typed values or a
:class:`MalformedWebhook` naming the field and the problem - never another exception: a body
nested deeper than :data:`MAX_WEBHOOK_DEPTH` levels, an object where text belongs, a
timestamp that is not finite, not a time, or outside the datetime range once converted to
UTC are all refused here. Reasons quote values only through :func:`shown` (short, ASCII), so
they fit in a dead-letter attribute whatever the body held.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from mail_pipeline.domain.fields import json_type
from mail_pipeline.domain.mailpieces import clip_detail
from mail_pipeline.integrations.errors import VendorUnavailable
from mail_pipeline.integrations.printers.base import MalformedWebhook
from mail_pipeline.integrations.ratelimit import Limiter, SlidingWindowLimiter

#: Levels of nesting a webhook body may have. The printers' bodies have fewer than 10; a
#: body nested hundreds deep is hostile, and would make later recursive code (``repr``,
#: logging) fail where the reason would be harder to read.
MAX_WEBHOOK_DEPTH = 32

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


def load_json(text: str, *, what: str) -> Any:
    """``json.loads`` with every failure as :class:`MalformedWebhook`: not JSON, or nested
    so deep that the decoder runs out of recursion (``RecursionError``)."""
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise MalformedWebhook(f"{what} is nested too deep to decode") from exc
    except (TypeError, ValueError) as exc:
        raise MalformedWebhook(f"{what} is not JSON: {shown(str(exc), 120)}") from exc


def json_depth(value: Any) -> int:
    """Levels of nesting of a decoded JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def webhook_json(vendor: str, body: str) -> dict[str, Any]:
    """A webhook body as a JSON object, or :class:`MalformedWebhook` saying why not."""
    data = load_json(body, what=f"{vendor} webhook body")
    if not isinstance(data, dict):
        raise MalformedWebhook(f"{vendor} webhook body is not a JSON object")
    if json_depth(data) > MAX_WEBHOOK_DEPTH:
        raise MalformedWebhook(
            f"{vendor} webhook body is nested more than {MAX_WEBHOOK_DEPTH} levels deep"
        )
    return data


def shown(value: Any, limit: int = 40) -> str:
    """A value as a reason may quote it: text cut to ``limit`` characters and escaped to
    ASCII (a NUL or a lone surrogate would not survive a queue attribute), anything else by
    its JSON type name."""
    if isinstance(value, str):
        cut = value[:limit] + ("..." if len(value) > limit else "")
        return repr(cut).encode("ascii", "backslashreplace").decode("ascii")
    return json_type(value)


def id_text(value: Any, *, what: str) -> str:
    """An identifier the printer sent as text or as an integer (Stannp's ids are numbers),
    as text. Anything else - missing, empty, a boolean, a fraction, an object - is refused;
    the length and characters are checked when the update is built."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None or value == "":
        raise MalformedWebhook(f"{what} is missing")
    raise MalformedWebhook(f"{what} is {json_type(value)}, not text")


def detail_text(value: Any, *, what: str) -> str | None:
    """An informational text field (a tracking reference, a return reason): ``None`` when
    absent or empty, text or an integer as text, cut to the stored length
    (:func:`~mail_pipeline.domain.mailpieces.clip_detail`); an object, list, boolean or
    fraction is refused."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise MalformedWebhook(f"{what} is {json_type(value)}, not text")
    return clip_detail(value)


def parse_timestamp(value: Any, *, what: str) -> datetime:
    """An aware UTC datetime from ISO 8601, ``YYYY-MM-DD HH:MM:SS`` or epoch seconds.

    Naive values (Stannp's ``"2024-01-15 10:30:00"``) are taken as UTC; an offset is
    converted to UTC here, so a time whose conversion leaves the datetime range
    (``0001-01-01T00:00:00+14:00``) is refused, as is a number that is not finite or not a
    representable epoch time. Whether the time is plausible is checked when the update is
    built (:func:`~mail_pipeline.domain.mailpieces.occurred_at_problem`).
    """
    if isinstance(value, bool) or value is None or value == "":
        raise MalformedWebhook(f"{what} is missing")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
            if not math.isfinite(seconds):
                raise ValueError("not finite")
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, ValueError, OSError) as exc:
            raise MalformedWebhook(f"{what} {value!r:.40} is not a representable time") from exc
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise MalformedWebhook(f"{what} {shown(value)} is not a timestamp") from exc
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        try:
            return parsed.astimezone(UTC)
        except OverflowError as exc:
            raise MalformedWebhook(
                f"{what} {shown(value)} is outside the representable range in UTC"
            ) from exc
    raise MalformedWebhook(f"{what} is {json_type(value)}, not a timestamp")


def iso_utc(epoch_seconds: float, *, milliseconds: bool = False) -> str:
    """``2024-01-15T10:30:00Z`` (or ``...00.000Z``) for an epoch time."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    if milliseconds:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_limiter(
    limiter: Limiter | None,
    rate_limit: tuple[int, float] | None,
    fraction: float,
) -> Limiter | None:
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
