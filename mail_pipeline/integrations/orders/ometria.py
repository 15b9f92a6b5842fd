"""Orders from Ometria's Data API (integrations.md §8), with raw httpx.

What is documented [V]: ``https://api.ometria.com/v2``, the ``X-Ometria-Auth: <api key>``
header (a bad key answers **403**), ``GET /v2/orders``, results sorted by Ometria's internal
id unless ``orderby=timestamp_update`` (used here, for incremental reads), 4 requests per
second per account with 429 over it (no ``Retry-After``: the client backs off exponentially,
and keeps under the limit itself with a client-side limiter).

What the reference leaves open is assumed as follows [U] - confirm with Ometria, then change
the constants below:

- the window and paging parameters: ``timestamp_update_from`` (inclusive),
  ``timestamp_update_to`` (exclusive), ``limit`` (at most :data:`MAX_PAGE_SIZE`) and
  ``offset``; the answer is a JSON array of orders, and a page shorter than ``limit`` is the
  last; orders with the same ``timestamp_update`` come in a stable order;
- the order's fields: ``id``, ``timestamp`` (placed), ``timestamp_update`` (last change),
  ``grand_total``, ``currency``, ``status``, ``is_valid``, ``coupon_code`` (one code, or
  several separated by commas), ``customer.email``, and ``shipping_address`` /
  ``billing_address`` with ``line_1``, ``line_2``, ``city``, ``state``, ``postcode``,
  ``country_code``;
- errors carry a JSON ``message`` (or ``error``); any other body is quoted as text.

Paging is by key, not by a growing offset: each next page starts at the last
``timestamp_update`` seen, skipping (``offset``) only the orders already read at that very
time. An order updated while the sync pages through moves *forward* in that sort - the sync
meets it again, which the upsert makes harmless - whereas a growing offset would silently
skip the order that slid into its place.

Mapping (:func:`order_from_ometria`): ``status`` "cancelled" (or "canceled") and
``is_valid: false`` (Ometria's mark for orders that must not count) make the order cancelled;
``status`` "refunded" means refunded in full (Ometria reports no refunded amount);
``updated_at`` is ``timestamp_update``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx

from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.orders import InvalidOrder, OrderAddress, SourceOrder
from mail_pipeline.integrations.errors import IntegrationError
from mail_pipeline.integrations.http import HttpApi, RetryPolicy, default_error
from mail_pipeline.integrations.orders import mapping
from mail_pipeline.integrations.orders.base import OrderPage
from mail_pipeline.integrations.orders.mapping import MalformedPage, Unreadable
from mail_pipeline.integrations.ratelimit import SlidingWindowLimiter

log = logging.getLogger(__name__)

VENDOR = "ometria"
SOURCE = IntegrationKind.OMETRIA
BASE_URL = "https://api.ometria.com"
ORDERS_PATH = "/v2/orders"
AUTH_HEADER = "X-Ometria-Auth"
#: Data API: 4 requests per second per account.
RATE_LIMIT = (4, 1.0)
MAX_PAGE_SIZE = 250
DEFAULT_PAGE_SIZE = 100
#: [U] parameter names (see the module docstring).
SINCE_PARAM = "timestamp_update_from"
UNTIL_PARAM = "timestamp_update_to"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
CANCELLED_STATUSES = frozenset({"cancelled", "canceled"})
REFUNDED_STATUSES = frozenset({"refunded"})


def _utcnow() -> datetime:
    return datetime.now(UTC)


def ometria_error(response: httpx.Response) -> IntegrationError:
    return default_error(VENDOR, response, mapping.error_message(response))


def query_time(moment: datetime, *, up: bool = False) -> str:
    """A window bound in whole UTC seconds (rounded to widen the window, never narrow it)."""
    if moment.tzinfo is None:
        raise ValueError("order windows must be timezone-aware")
    seconds = math.ceil(moment.timestamp()) if up else math.floor(moment.timestamp())
    return datetime.fromtimestamp(seconds, UTC).isoformat()


class OmetriaOrderClient:
    """One Ometria account (one API key) as an order source."""

    source = SOURCE

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = BASE_URL,
        page_size: int = DEFAULT_PAGE_SIZE,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: tuple[int, float] | None = RATE_LIMIT,
        sleep: Callable[[float], None] = time.sleep,
        timeout: httpx.Timeout | None = None,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` is the wall clock orders' times are judged by; ``monotonic`` and
        ``sleep`` pace the client-side rate limiter (``rate_limit=None``: none)."""
        if not api_key:
            raise ValueError("an Ometria client needs an API key")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}")
        self.page_size = page_size
        self.clock = clock
        self.api = HttpApi(
            vendor=VENDOR,
            base_url=base_url,
            headers={AUTH_HEADER: api_key, "Accept": "application/json"},
            retry=retry or RetryPolicy(),
            transport=transport,
            limiter=None
            if rate_limit is None
            else SlidingWindowLimiter(*rate_limit, clock=monotonic, sleep=sleep),
            error_mapper=ometria_error,
            sleep=sleep,
            timeout=timeout or DEFAULT_TIMEOUT,
        )

    def order_pages(self, since: datetime, until: datetime | None = None) -> Iterator[OrderPage]:
        """Orders changed in ``[since, until)``, by last change, oldest first."""
        start = query_time(since)
        skip = 0
        while True:
            params: dict[str, str | int] = {
                "orderby": "timestamp_update",
                SINCE_PARAM: start,
                "limit": self.page_size,
                "offset": skip,
            }
            if until is not None:
                params[UNTIL_PARAM] = query_time(until, up=True)
            response = self.api.request("GET", ORDERS_PATH, params=params)
            items = mapping.load_json(response, VENDOR, "an orders page")
            if not isinstance(items, list):
                raise MalformedPage(VENDOR, f"an orders page is {mapping.kind_of(items)}")
            yield self._page(items)
            if len(items) < self.page_size:
                return
            start, skip = _next_start(items, start, skip)

    def check_access(self) -> str:
        """One page of at most one order (``limit=1``): a harmless read that proves the key
        works (a refused key is an ``AuthenticationFailed``); what was read, in words."""
        response = self.api.request(
            "GET", ORDERS_PATH, params={"orderby": "timestamp_update", "limit": 1}
        )
        items = mapping.load_json(response, VENDOR, "an orders page")
        if not isinstance(items, list):
            raise MalformedPage(VENDOR, f"an orders page is {mapping.kind_of(items)}")
        return f"read a page of orders: {len(items)} of at most 1"

    def _page(self, items: list[Any]) -> OrderPage:
        now = self.clock()
        return OrderPage.mapped(items, lambda item: order_from_ometria(item, now=now), "Ometria")

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> OmetriaOrderClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: Any order time is before this; used to read update times for paging only.
_FAR_FUTURE = datetime(9000, 1, 1, tzinfo=UTC)


def _update_time(item: Any) -> datetime | None:
    value = item.get("timestamp_update") if isinstance(item, dict) else None
    try:
        return mapping.moment(value, "timestamp_update", _FAR_FUTURE)
    except Unreadable:
        return None


def _next_start(items: list[Any], start: str, skip: int) -> tuple[str, int]:
    """Where the page after the full page ``items`` starts: at the last ``timestamp_update``
    read, skipping the orders of that time already read. A page that ends where it started
    (or on a time that cannot be read) goes on by offset from the same start."""
    last = _update_time(items[-1])
    if last is None or last <= datetime.fromisoformat(start):
        return start, skip + len(items)
    at_last = 0
    for item in reversed(items):
        if _update_time(item) != last:
            break
        at_last += 1
    return last.isoformat(), at_last


def _address(value: Any) -> OrderAddress | None:
    place = value if isinstance(value, dict) else {}
    return mapping.address(
        place.get("line_1"),
        place.get("line_2"),
        place.get("city"),
        place.get("state"),
        place.get("postcode"),
        place.get("country_code"),
    )


def _coupon_codes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, str):
        return ()
    return mapping.codes(value.split(","))


def order_from_ometria(item: Any, *, now: datetime | None = None) -> SourceOrder:
    """One Ometria order as a :class:`SourceOrder`, or :class:`InvalidOrder`."""
    now = now or _utcnow()
    if not isinstance(item, dict):
        raise InvalidOrder(SOURCE, None, f"the order is {mapping.kind_of(item)}")
    try:
        external_id = mapping.order_id(item.get("id"), "id")
    except Unreadable as exc:
        raise InvalidOrder(SOURCE, None, str(exc)) from None
    try:
        ordered_at = mapping.moment(item.get("timestamp"), "timestamp", now)
        updated_at = mapping.optional_moment(item.get("timestamp_update"), "timestamp_update", now)
        currency = mapping.currency(item.get("currency"), "currency")
        total = mapping.minor(item.get("grand_total"), currency, "grand_total")
    except Unreadable as exc:
        raise InvalidOrder(SOURCE, external_id, str(exc)) from None
    status = item.get("status")
    status = status.strip().lower() if isinstance(status, str) else ""
    customer = item.get("customer")
    customer = customer if isinstance(customer, dict) else {}
    return SourceOrder(
        source=SOURCE,
        external_id=external_id,
        ordered_at=ordered_at,
        total_minor=total,
        currency=currency,
        email=mapping.text(customer.get("email")),
        address=_address(item.get("shipping_address")) or _address(item.get("billing_address")),
        discount_codes=_coupon_codes(item.get("coupon_code")),
        cancelled=status in CANCELLED_STATUSES or item.get("is_valid") is False,
        refunded_minor=total if status in REFUNDED_STATUSES else 0,
        updated_at=updated_at,
    )
