"""Orders from a Shopify store: the Admin GraphQL API (integrations.md §7), raw httpx.

``POST https://{shop}.myshopify.com/admin/api/{version}/graphql.json`` with
``X-Shopify-Access-Token``; the :data:`ORDERS_QUERY` asks for
``orders(first:, after:, query: "updated_at:>='...' AND updated_at:<'...'", sortKey: UPDATED_AT)``
and pages with ``pageInfo { hasNextPage endCursor }``. The window is widened to whole
seconds, never narrowed. Requests go only to ``https://<shop>.myshopify.com``: the shop is
the integration's ``shop`` setting, a myshopify subdomain (``juniper-trail`` or
``juniper-trail.myshopify.com``), never any other host - the token travels with every call.

Rate limiting is Shopify's calculated query cost (a leaky bucket per app and store), read
from every answer's ``extensions.cost`` (``requestedQueryCost``, ``actualQueryCost``,
``throttleStatus {maximumAvailable, currentlyAvailable, restoreRate}``), never a fixed sleep:

- before a request, when the query's last requested cost exceeds what the bucket holds now
  (the last ``currentlyAvailable`` plus ``restoreRate`` per second since it was read, at most
  ``maximumAvailable``), the client waits exactly ``(cost - available) / restoreRate``
  seconds (:class:`CostBudget`);
- an answer with a ``THROTTLED`` error (HTTP 200) waits
  ``(requestedQueryCost - currentlyAvailable) / restoreRate`` from that answer and asks
  again, at most :data:`MAX_THROTTLED_RETRIES` times, then gives up with
  :class:`~mail_pipeline.integrations.errors.RateLimited` (the sync tries again later);
- HTTP 429 (with ``Retry-After``) and 5xx are retried by the shared ``HttpApi``.

Other GraphQL errors: ``ACCESS_DENIED`` without data is an
:class:`~mail_pipeline.integrations.errors.AuthenticationFailed` (the token lacks
``read_orders``); with data - a protected field such as the email refused while the orders
came - the orders are kept without it and a warning names the codes;
``INTERNAL_SERVER_ERROR`` is :class:`VendorUnavailable`; anything else is
:class:`RequestRejected` with Shopify's message.

Mapping (:func:`order_from_node`): the id is the order's GID; ``ordered_at`` is
``processedAt`` (an imported order's original date), else ``createdAt``; ``updated_at`` is
``updatedAt``; the total is ``totalPriceSet.shopMoney`` in its ``currencyCode`` (before
refunds), the refunded amount ``totalRefundedSet.shopMoney`` (which must be in the same
currency); ``cancelled`` is whether ``cancelledAt`` is set; email, ``shippingAddress`` and
``discountCodes`` as sent.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.orders import InvalidOrder, SourceOrder
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    IntegrationError,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import HttpApi, RetryPolicy, default_error
from mail_pipeline.integrations.orders import mapping
from mail_pipeline.integrations.orders.base import OrderPage
from mail_pipeline.integrations.orders.mapping import MalformedPage, Unreadable

log = logging.getLogger(__name__)

VENDOR = "shopify"
SOURCE = IntegrationKind.SHOPIFY
#: Quarterly versions, each supported about a year.
DEFAULT_API_VERSION = "2026-07"
TOKEN_HEADER = "X-Shopify-Access-Token"
#: ``first`` may be at most 250; 100 orders cost about 600 points (a query may cost 1000).
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 250
MAX_THROTTLED_RETRIES = 5
SHOP_SETTING = "shop"
VERSION_SETTING = "api_version"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_SHOP = re.compile(r"^[a-z0-9][a-z0-9-]{0,59}$")
_VERSION = re.compile(r"^\d{4}-\d{2}$")

ORDERS_QUERY = """
query Orders($first: Int!, $after: String, $query: String) {
  orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id
      email
      createdAt
      processedAt
      updatedAt
      cancelledAt
      currencyCode
      discountCodes
      totalPriceSet { shopMoney { amount currencyCode } }
      totalRefundedSet { shopMoney { amount currencyCode } }
      shippingAddress { address1 address2 city provinceCode zip countryCodeV2 }
    }
  }
}
""".strip()


#: The audit's harmless read: the shop's name (cost 1, no scope needed).
SHOP_QUERY = "query Shop { shop { name } }"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def shop_name(value: str) -> str:
    """The shop's myshopify subdomain from ``juniper-trail`` or ``juniper-trail.myshopify.com``
    (``https://`` and a trailing ``/`` tolerated); :class:`ValueError` for anything else."""
    text = value.strip().lower().removeprefix("https://").rstrip("/")
    text = text.removesuffix(".myshopify.com")
    if not _SHOP.match(text):
        raise ValueError("the shop must be a myshopify.com subdomain, such as 'juniper-trail'")
    return text


def shop_url(shop: str) -> str:
    return f"https://{shop_name(shop)}.myshopify.com"


def search_time(moment: datetime, *, up: bool = False) -> str:
    if moment.tzinfo is None:
        raise ValueError("order windows must be timezone-aware")
    seconds = math.ceil(moment.timestamp()) if up else math.floor(moment.timestamp())
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def search_query(since: datetime, until: datetime | None) -> str:
    """Shopify's search syntax for ``since <= updated_at < until``."""
    terms = [f"updated_at:>='{search_time(since)}'"]
    if until is not None:
        terms.append(f"updated_at:<'{search_time(until, up=True)}'")
    return " AND ".join(terms)


def shopify_error(response: httpx.Response) -> IntegrationError:
    """Shopify's HTTP errors: ``{"errors": "..."}`` (text or an object) on 401/402/403/404."""
    return default_error(VENDOR, response, mapping.error_message(response))


@dataclass
class CostBudget:
    """What Shopify's bucket holds for this app and store, as last reported."""

    maximum: float
    available: float
    restore_rate: float
    #: ``clock()`` when ``available`` was true.
    observed_at: float

    def available_at(self, now: float) -> float:
        return min(
            self.maximum, self.available + self.restore_rate * max(0.0, now - self.observed_at)
        )

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until the bucket holds ``cost`` (0 when it does now)."""
        missing = cost - self.available_at(now)
        if missing <= 0 or self.restore_rate <= 0:
            return 0.0
        return missing / self.restore_rate


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def read_cost(body: Any, now: float) -> tuple[float | None, CostBudget | None]:
    """``(requestedQueryCost, budget)`` from an answer's ``extensions.cost`` (None: absent)."""
    extensions = body.get("extensions") if isinstance(body, dict) else None
    cost = extensions.get("cost") if isinstance(extensions, dict) else None
    if not isinstance(cost, dict):
        return None, None
    requested = _number(cost.get("requestedQueryCost"))
    status = cost.get("throttleStatus")
    if not isinstance(status, dict):
        return requested, None
    maximum = _number(status.get("maximumAvailable"))
    available = _number(status.get("currentlyAvailable"))
    rate = _number(status.get("restoreRate"))
    if maximum is None or available is None or rate is None or rate <= 0:
        return requested, None
    return requested, CostBudget(maximum, available, rate, now)


def _error_codes(errors: list[Any]) -> list[str]:
    codes = []
    for error in errors:
        extensions = error.get("extensions") if isinstance(error, dict) else None
        code = extensions.get("code") if isinstance(extensions, dict) else None
        codes.append(code if isinstance(code, str) else "")
    return codes


def _first_message(errors: list[Any]) -> str:
    for error in errors:
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:300]
    return "the query failed"


class ShopifyOrderClient:
    """One Shopify store (one Admin API access token) as an order source."""

    source = SOURCE

    def __init__(
        self,
        access_token: str,
        shop: str,
        *,
        api_version: str = DEFAULT_API_VERSION,
        page_size: int = DEFAULT_PAGE_SIZE,
        transport: httpx.BaseTransport | None = None,
        base_url: str | None = None,
        retry: RetryPolicy | None = None,
        max_throttled_retries: int = MAX_THROTTLED_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        if not access_token:
            raise ValueError("a Shopify client needs an Admin API access token")
        if not _VERSION.match(api_version):
            raise ValueError(f"api_version must look like 2026-07, not {api_version!r}")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}")
        self.shop = shop_name(shop)
        self.path = f"/admin/api/{api_version}/graphql.json"
        self.page_size = page_size
        self.max_throttled_retries = max_throttled_retries
        self.sleep = sleep
        self.clock = clock
        self.now = now
        self.budget: CostBudget | None = None
        #: The orders query's last requested cost (the same page size costs the same).
        self.query_cost: float | None = None
        self.api = HttpApi(
            vendor=VENDOR,
            base_url=base_url or shop_url(self.shop),
            headers={TOKEN_HEADER: access_token, "Accept": "application/json"},
            retry=retry or RetryPolicy(),
            transport=transport,
            error_mapper=shopify_error,
            sleep=sleep,
            timeout=timeout or DEFAULT_TIMEOUT,
        )

    @classmethod
    def from_settings(
        cls, access_token: str, settings: Mapping[str, Any], **options: Any
    ) -> ShopifyOrderClient:
        """A client for the integration's ``shop`` (required) and ``api_version`` settings;
        a missing or foreign shop is a :class:`RequestRejected` naming the setting."""
        shop = settings.get(SHOP_SETTING)
        try:
            name = shop_name(shop if isinstance(shop, str) else "")
        except ValueError as exc:
            raise RequestRejected(
                VENDOR, f"the integration's {SHOP_SETTING} setting: {exc}"
            ) from None
        version = settings.get(VERSION_SETTING)
        if isinstance(version, str) and version.strip():
            options["api_version"] = version.strip()  # the shop's own version wins
        return cls(access_token, name, **options)

    # -- orders -----------------------------------------------------------------------------
    def order_pages(self, since: datetime, until: datetime | None = None) -> Iterator[OrderPage]:
        """Orders updated in ``[since, until)``, by ``updated_at``, oldest first."""
        query = search_query(since, until)
        cursor: str | None = None
        while True:
            data = self._orders(query, cursor)
            page_info = data.get("pageInfo")
            if not isinstance(page_info, dict):
                raise MalformedPage(VENDOR, "an orders page has no pageInfo object")
            nodes = data.get("nodes")
            if not isinstance(nodes, list):
                raise MalformedPage(VENDOR, "an orders page has no nodes list")
            yield self._page(nodes)
            if page_info.get("hasNextPage") is not True:
                return
            next_cursor = page_info.get("endCursor")
            if not isinstance(next_cursor, str) or not next_cursor or next_cursor == cursor:
                raise MalformedPage(VENDOR, "an orders page has more but no new endCursor")
            cursor = next_cursor

    def _orders(self, query: str, cursor: str | None) -> Mapping[str, Any]:
        """One ``orders`` connection, waiting for the cost bucket as Shopify reports it."""
        throttled = 0
        while True:
            self._wait_for_budget()
            variables = {"first": self.page_size, "after": cursor, "query": query}
            response = self.api.request(
                "POST", self.path, json={"query": ORDERS_QUERY, "variables": variables}
            )
            body = mapping.load_json(response, VENDOR, "an orders page")
            if not isinstance(body, dict):
                raise MalformedPage(VENDOR, f"an orders page is {mapping.kind_of(body)}")
            requested, budget = read_cost(body, self.clock())
            if requested is not None:
                self.query_cost = requested
            if budget is not None:
                self.budget = budget
            errors = body.get("errors")
            if errors is not None and not isinstance(errors, list):
                raise MalformedPage(VENDOR, f"errors is {mapping.kind_of(errors)}, not a list")
            codes = _error_codes(errors or [])
            if "THROTTLED" in codes:
                throttled += 1
                if throttled > self.max_throttled_retries:
                    raise RateLimited(
                        VENDOR,
                        f"still throttled after {self.max_throttled_retries} waits for the "
                        "query cost bucket",
                        retry_after=self._throttled_wait(throttled),
                        status_code=200,
                        code="THROTTLED",
                    )
                self._pause(self._throttled_wait(throttled))
                continue
            data = body.get("data")
            orders = data.get("orders") if isinstance(data, dict) else None
            if codes:
                self._fail_or_warn(codes, errors or [], has_data=isinstance(orders, dict))
            if not isinstance(orders, dict):
                raise MalformedPage(VENDOR, "an answer has no data.orders object")
            return orders

    def _fail_or_warn(self, codes: list[str], errors: list[Any], *, has_data: bool) -> None:
        message = _first_message(errors)
        if not has_data:
            if "ACCESS_DENIED" in codes:
                raise AuthenticationFailed(VENDOR, message, status_code=200, code="ACCESS_DENIED")
            if "INTERNAL_SERVER_ERROR" in codes:
                raise VendorUnavailable(
                    VENDOR, message, status_code=200, code="INTERNAL_SERVER_ERROR"
                )
            raise RequestRejected(VENDOR, message, status_code=200, code=codes[0] or None)
        log.warning(
            "Shopify shop %s answered orders with errors (%s); kept what came",
            self.shop,
            ", ".join(sorted({c or "no code" for c in codes})),
        )

    def _throttled_wait(self, attempt: int) -> float:
        """After a THROTTLED answer: until the bucket holds the query's cost, as that answer
        reported the bucket; without a report, the retry policy's backoff."""
        if self.budget is not None and self.query_cost is not None:
            return self.budget.wait_for(self.query_cost, self.clock())
        return self.api.retry.backoff(attempt)

    def _wait_for_budget(self) -> None:
        if self.budget is None or self.query_cost is None:
            return
        wait = self.budget.wait_for(self.query_cost, self.clock())
        if wait > 0:
            self._pause(wait)

    def _pause(self, seconds: float) -> None:
        """Sleep, then count the bucket as refilled by what the wait was for."""
        if seconds > 0:
            log.info("Shopify shop %s: waiting %.2fs for the query cost bucket", self.shop, seconds)
            before = self.budget.available_at(self.clock()) if self.budget else 0.0
            self.sleep(seconds)
            if self.budget is not None:
                self.budget.available = min(
                    self.budget.maximum, before + self.budget.restore_rate * seconds
                )
                self.budget.observed_at = self.clock()

    # -- the shop: a harmless read ------------------------------------------------------------
    def store_name(self) -> str:
        """The shop's name (``shop { name }``): one small read that proves the token works.
        A refused token is :class:`AuthenticationFailed`; a throttled answer is
        :class:`RateLimited` (this read is not worth waiting for the bucket)."""
        response = self.api.request("POST", self.path, json={"query": SHOP_QUERY})
        body = mapping.load_json(response, VENDOR, "the shop")
        if not isinstance(body, dict):
            raise MalformedPage(VENDOR, f"the shop answer is {mapping.kind_of(body)}")
        requested, budget = read_cost(body, self.clock())
        if budget is not None:
            self.budget = budget
        errors = body.get("errors")
        if errors is not None and not isinstance(errors, list):
            raise MalformedPage(VENDOR, f"errors is {mapping.kind_of(errors)}, not a list")
        codes = _error_codes(errors or [])
        if "THROTTLED" in codes:
            raise RateLimited(
                VENDOR,
                "throttled reading the shop's name",
                retry_after=self.budget.wait_for(requested or 1.0, self.clock())
                if self.budget is not None
                else None,
                status_code=200,
                code="THROTTLED",
            )
        data = body.get("data")
        shop = data.get("shop") if isinstance(data, dict) else None
        if codes:
            self._fail_or_warn(codes, errors or [], has_data=isinstance(shop, dict))
        name = shop.get("name") if isinstance(shop, dict) else None
        if not isinstance(name, str):
            raise MalformedPage(VENDOR, "the shop answer has no data.shop.name")
        return name

    def check_access(self) -> str:
        """Read the shop's name (:meth:`store_name`); what was read, in words."""
        return f"read the name of the shop {self.shop}: {self.store_name()}"

    def _page(self, nodes: list[Any]) -> OrderPage:
        now = self.now()
        return OrderPage.mapped(nodes, lambda node: order_from_node(node, now=now), "Shopify")

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> ShopifyOrderClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _money(node: Mapping[str, Any], field: str, *, required: bool) -> tuple[Any, Any]:
    """``(amount, currencyCode)`` of ``field.shopMoney``."""
    money_set = mapping.obj(node.get(field), field, required=required)
    money = mapping.obj(money_set.get("shopMoney"), f"{field}.shopMoney", required=required)
    return money.get("amount"), money.get("currencyCode")


def order_from_node(node: Any, *, now: datetime | None = None) -> SourceOrder:
    """One ``Order`` node as a :class:`SourceOrder`, or :class:`InvalidOrder`."""
    now = now or _utcnow()
    if not isinstance(node, dict):
        raise InvalidOrder(SOURCE, None, f"the order is {mapping.kind_of(node)}")
    try:
        external_id = mapping.order_id(node.get("id"), "id")
    except Unreadable as exc:
        raise InvalidOrder(SOURCE, None, str(exc)) from None
    try:
        placed = node.get("processedAt")
        ordered_at = mapping.moment(
            placed if placed is not None else node.get("createdAt"), "processedAt", now
        )
        updated_at = mapping.optional_moment(node.get("updatedAt"), "updatedAt", now)
        amount, code = _money(node, "totalPriceSet", required=True)
        currency = mapping.currency(
            code if code is not None else node.get("currencyCode"),
            "totalPriceSet.shopMoney.currencyCode",
        )
        total = mapping.minor(amount, currency, "totalPriceSet.shopMoney.amount")
        refunded_amount, refunded_code = _money(node, "totalRefundedSet", required=False)
        refunded = 0
        if refunded_amount is not None:
            if (
                refunded_code is not None
                and mapping.currency(refunded_code, "totalRefundedSet.shopMoney.currencyCode")
                != currency
            ):
                raise Unreadable("totalRefundedSet", "is in another currency than the total")
            refunded = mapping.minor(refunded_amount, currency, "totalRefundedSet.shopMoney.amount")
    except Unreadable as exc:
        raise InvalidOrder(SOURCE, external_id, str(exc)) from None
    place = node.get("shippingAddress")
    place = place if isinstance(place, dict) else {}
    listed = node.get("discountCodes")
    return SourceOrder(
        source=SOURCE,
        external_id=external_id,
        ordered_at=ordered_at,
        total_minor=total,
        currency=currency,
        email=mapping.text(node.get("email")),
        address=mapping.address(
            place.get("address1"),
            place.get("address2"),
            place.get("city"),
            place.get("provinceCode"),
            place.get("zip"),
            place.get("countryCodeV2"),
        ),
        discount_codes=mapping.codes(listed if isinstance(listed, list) else []),
        cancelled=node.get("cancelledAt") is not None,
        refunded_minor=refunded,
        updated_at=updated_at,
    )
