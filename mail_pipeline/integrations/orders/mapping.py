"""What the three order mappers share: reading one vendor order's fields into a SourceOrder.

Each vendor module maps its payload with these readers; a reader that cannot make sense of a
field raises :class:`Unreadable` naming the field, and the vendor's mapper turns it into the
order's :class:`~mail_pipeline.domain.orders.InvalidOrder` (reported in the page, never
raised out of the client). The rules, the same for every source:

- the order's id is text or an integer; an empty one, or one a row cannot hold (longer than
  ``EXTERNAL_ORDER_ID_MAX``, a NUL or lone surrogate) rejects the order *without repeating
  the id* (:func:`order_id`);
- times are ISO-8601 text (a naive time is taken as UTC) or epoch seconds, converted to UTC
  while reading, between :data:`EARLIEST_ORDER_AT` and :data:`CLOCK_SKEW` after now - a
  later time would carry the sync's watermark past orders not yet placed (:func:`moment`);
- money is read by ``domain.money.to_minor`` in the order's ISO 4217 currency;
- customer fields (email, address lines) only ever become matching keys: a value of the
  wrong type, over 320 characters, or one the database cannot store (NUL, lone surrogate)
  is *dropped* and the order kept - it still counts as revenue and can match by its other
  keys (:func:`text`);
- discount codes are trimmed and upper-cased (``domain.orders.normalize_code``), duplicates
  dropped, order kept; a code that could not be stored is dropped (:func:`codes`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from mail_pipeline.domain.fields import (
    ADDRESS_LINE_MAX,
    EXTERNAL_ORDER_ID_MAX,
    OFFER_CODE_MAX,
    unstorable_character,
)
from mail_pipeline.domain.money import InvalidAmount, currency_code, to_minor
from mail_pipeline.domain.orders import OrderAddress, normalize_code
from mail_pipeline.integrations.errors import RequestRejected

#: No order of this platform is older than this.
EARLIEST_ORDER_AT = datetime(2000, 1, 1, tzinfo=UTC)
#: How far ahead of our clock a source's order time may be.
CLOCK_SKEW = timedelta(days=1)
#: Longest text kept from a customer field (longer values are no usable key).
_TEXT_MAX = max(ADDRESS_LINE_MAX, 320)
#: A discount code longer than this is no code anyone typed (``domain.orders`` refuses it).
_CODE_MAX = OFFER_CODE_MAX * 4


class Unreadable(ValueError):
    """A field of a vendor's order that cannot be read; ``str()`` names the field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field} {problem}")


def kind_of(value: Any) -> str:
    """A JSON type name for messages (``object``, ``array``, ``text``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def obj(value: Any, field: str, *, required: bool = False) -> Mapping[str, Any]:
    """``value`` as an object (``{}`` for null unless ``required``)."""
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise Unreadable(field, f"is {kind_of(value)}, not an object")
    return value


def order_id(value: Any, field: str) -> str:
    """An order's id at its source (see the module docstring)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise Unreadable(field, "is missing" if value in (None, "") else f"is {kind_of(value)}")
    text_id = value.strip()
    if len(text_id) > EXTERNAL_ORDER_ID_MAX:
        raise Unreadable(field, f"is longer than {EXTERNAL_ORDER_ID_MAX} characters")
    if unstorable_character(text_id):
        raise Unreadable(field, "holds a character the database cannot store")
    return text_id


def _parse_moment(value: Any, field: str) -> datetime:
    if isinstance(value, bool) or value is None:
        raise Unreadable(field, "is missing" if value is None else "is a boolean, not a time")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise Unreadable(field, "is not a finite number of seconds")
        try:
            return datetime.fromtimestamp(value, UTC)
        except (ValueError, OverflowError, OSError):
            raise Unreadable(field, "is not a time this platform can hold") from None
    if not isinstance(value, str):
        raise Unreadable(field, f"is {kind_of(value)}, not a time")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise Unreadable(field, "is not an ISO-8601 time or epoch seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise Unreadable(field, "is not a time this platform can hold") from None


def moment(value: Any, field: str, now: datetime) -> datetime:
    """A time the order carries, in UTC (see the module docstring)."""
    parsed = _parse_moment(value, field)
    if parsed < EARLIEST_ORDER_AT:
        raise Unreadable(field, f"is before {EARLIEST_ORDER_AT.date().isoformat()}")
    if parsed > now + CLOCK_SKEW:
        raise Unreadable(field, "is more than a day in the future")
    return parsed


def optional_moment(value: Any, field: str, now: datetime) -> datetime | None:
    return None if value is None else moment(value, field, now)


def currency(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise Unreadable(field, "is missing" if value is None else f"is {kind_of(value)}")
    try:
        return currency_code(value)
    except InvalidAmount as exc:
        raise Unreadable(field, f"is refused: {exc}") from None


def minor(value: Any, code: str, field: str) -> int:
    """An amount of currency ``code`` in minor units."""
    if not isinstance(value, str | int | float | Decimal) or isinstance(value, bool):
        raise Unreadable(field, "is missing" if value is None else f"is {kind_of(value)}")
    try:
        return to_minor(value, code)
    except InvalidAmount as exc:
        raise Unreadable(field, f"is refused: {exc}") from None


def text(value: Any) -> str | None:
    """A customer field as text a key can be made of, or ``None`` (the field is dropped)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a numeric ZIP
    if not isinstance(value, str):
        return None
    cleaned = value.strip()
    if not cleaned or len(cleaned) > _TEXT_MAX or unstorable_character(cleaned):
        return None
    return cleaned


def address(
    line1: Any = None,
    line2: Any = None,
    city: Any = None,
    region: Any = None,
    postal_code: Any = None,
    country: Any = None,
) -> OrderAddress | None:
    """The order's address from whatever the source sent; ``None`` when nothing usable."""
    place = OrderAddress(
        line1=text(line1),
        line2=text(line2),
        city=text(city),
        region=text(region),
        postal_code=text(postal_code),
        country=text(country),
    )
    return None if place == OrderAddress() else place


def codes(values: Iterable[Any]) -> tuple[str, ...]:
    """Discount codes, normalized, in the order given, without duplicates."""
    seen: dict[str, None] = {}
    for value in values:
        code = text(value)
        if code is None or len(code) > _CODE_MAX:
            continue
        seen.setdefault(normalize_code(code), None)
    return tuple(seen)


class MalformedPage(RequestRejected):
    """A source answered 2xx with a page that is not its documented shape (not JSON, nested
    too deep, the wrong type): the organization's sync fails with this, the others go on."""


def load_json(response: httpx.Response, vendor: str, what: str) -> Any:
    """The JSON body of a page, or :class:`MalformedPage` naming ``what`` it was."""
    try:
        return response.json()
    except ValueError:
        raise MalformedPage(vendor, f"{what} is not JSON") from None
    except RecursionError:
        raise MalformedPage(vendor, f"{what} nests deeper than its JSON can be read") from None


def error_message(response: httpx.Response) -> str:
    """The readable part of a vendor's error body: ``message``, ``error`` (text or an object
    with a message) or ``errors`` (text, or a list whose first entry has a message), else the
    start of the body."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    found: Any = None
    if isinstance(body, dict):
        for key in ("message", "detail", "error", "errors"):
            found = body.get(key)
            if isinstance(found, list) and found:
                found = found[0]
            if isinstance(found, dict):
                found = found.get("message") or found.get("detail")
            if isinstance(found, str) and found.strip():
                break
            found = None
    if found is None:
        found = response.text[:300] or response.reason_phrase
    return str(found)[:300]
