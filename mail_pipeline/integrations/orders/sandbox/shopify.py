"""Shopify's Admin GraphQL API for the ``orders`` query, with its calculated query cost.

Routing and auth as Shopify: the shop is the request's host (``<shop>.myshopify.com``;
another host is a 404), ``X-Shopify-Access-Token`` must be the sandbox token (else 401
``{"errors": "[API] Invalid API key or access token ..."}``), the version is in the path
(``/admin/api/2026-07/graphql.json``; a malformed one is a 404) and echoed in
``X-Shopify-API-Version``. Only ``application/json`` bodies with the ``orders`` query are
answered (``first`` 1..250, ``after``, ``query`` with ``updated_at`` comparisons joined by
``AND``); the orders come from the shop's order book by ``updatedAt`` (``sortKey:
UPDATED_AT``), with opaque ``endCursor`` cursors. The ``shop { name }`` query (an audit's
harmless read) is answered too, with the shop's handle in words as its name, at a cost of 1.

The cost model (integrations.md §7): a connection costs 2 plus ``first`` times its node's
cost (:data:`ORDER_NODE_COST`: the order and its four nested objects), a query may cost at
most the bucket's size (else ``MAX_COST_EXCEEDED``), and each shop has a leaky bucket of
``maximumAvailable`` points refilled at ``restoreRate`` per second (1,000 and 50 by default).
A query whose requested cost exceeds what the bucket holds is answered HTTP 200 with a
``THROTTLED`` error; otherwise the *actual* cost (2 plus the nodes returned) is taken. Every
answer carries ``extensions.cost`` with ``throttleStatus``. The bucket, like the other
sandboxes' rate windows, is counted per sandbox instance.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from mail_pipeline.integrations.orders.sandbox.book import OrderBook
from mail_pipeline.integrations.orders.shopify import MAX_PAGE_SIZE, TOKEN_HEADER
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import (
    SandboxBehaviour,
    SandboxTransport,
    json_response,
)

SANDBOX_ACCESS_TOKEN = "sandbox-shopify-token"
#: Order 1 + totalPriceSet 2 (MoneyBag, MoneyV2) + totalRefundedSet 2 + shippingAddress 1.
ORDER_NODE_COST = 6
CONNECTION_COST = 2
#: ``shop { name }``: one object.
SHOP_COST = 1
_SHOP_QUERY = re.compile(r"\bshop\s*\{\s*name\s*\}")
_VERSION = re.compile(r"^\d{4}-\d{2}$")
_TERM = re.compile(r"^updated_at:(>=|>|<=|<)'?([^']+)'?$")
_EPSILON = 1e-6
#: Clock arithmetic on epoch seconds loses a few millionths of a point: not a shortfall.
_POINT_TOLERANCE = 1e-3
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"


@dataclass(frozen=True)
class ShopifyBucket:
    """Shopify's leaky bucket per app and store: its size and refill rate per second."""

    maximum: float = 1000.0
    restore_rate: float = 50.0


def _time(text: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def parse_search(query: str | None) -> tuple[float | None, float | None] | str:
    """``(since, until)`` of an ``updated_at`` search, or the error message."""
    since: float | None = None
    until: float | None = None
    if not query:
        return since, until
    for term in query.split(" AND "):
        match = _TERM.match(term.strip())
        moment = _time(match.group(2)) if match else None
        if match is None or moment is None:
            return f"the sandbox does not understand the search term {term!r}"
        operator = match.group(1)
        if operator in (">=", ">"):
            bound = moment + (_EPSILON if operator == ">" else 0.0)
            since = bound if since is None else max(since, bound)
        else:
            bound = moment + (_EPSILON if operator == "<=" else 0.0)
            until = bound if until is None else min(until, bound)
    return since, until


class ShopifySandbox(SandboxTransport):
    vendor = "shopify"
    routes = [("POST", r"/admin/api/(?P<version>[^/]+)/graphql\.json", "graphql")]

    def __init__(
        self,
        store: SandboxStore | None = None,
        behaviour: SandboxBehaviour | None = None,
        *,
        access_token: str = SANDBOX_ACCESS_TOKEN,
        bucket: ShopifyBucket | None = ShopifyBucket(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``bucket=None`` switches the cost limit off (costs are still reported)."""
        super().__init__(store, behaviour, sleep=sleep, clock=clock)
        self.access_token = access_token
        self.bucket = bucket
        self.book = OrderBook(self.store, "shopify")
        #: shop -> (points available, when counted)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._bucket_lock = threading.Lock()

    # -- the vendor's answers ---------------------------------------------------------------
    def error(self, status: int, message: str, code: str | None = None) -> httpx.Response:
        return json_response(status, {"errors": message})

    def rate_limited(self, retry_after: float) -> httpx.Response:
        return json_response(
            429,
            {"errors": "Exceeded the rate limit. Reduce request rates to resume service."},
            {"Retry-After": f"{max(1.0, retry_after):.1f}"},
        )

    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        if not request.url.host.endswith(".myshopify.com"):
            return self.error(404, "Not Found")
        if request.headers.get(TOKEN_HEADER.lower(), "") != self.access_token:
            return self.error(401, INVALID_TOKEN)
        return None

    @staticmethod
    def shop_of(request: httpx.Request) -> str:
        return request.url.host.removesuffix(".myshopify.com")

    def _graphql_error(
        self, message: str, code: str, cost: dict[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "errors": [{"message": message, "extensions": {"code": code, **extra}}]
        }
        if cost is not None:
            body["extensions"] = {"cost": cost}
        return body

    # -- the bucket -------------------------------------------------------------------------
    def _take(self, shop: str, requested: float) -> tuple[bool, float]:
        """Take ``requested`` points if the bucket holds them; ``(taken, available)``."""
        now = self.clock()
        limit = self.bucket or ShopifyBucket(maximum=float("inf"), restore_rate=0.0)
        with self._bucket_lock:
            available, at = self._buckets.get(shop, (limit.maximum, now))
            available = min(limit.maximum, available + limit.restore_rate * max(0.0, now - at))
            if self.bucket is not None and requested > available + _POINT_TOLERANCE:
                self._buckets[shop] = (available, now)
                return False, available
            self._buckets[shop] = (available - requested, now)
            return True, available - requested

    def _refund(self, shop: str, points: float) -> float:
        """Give back what a query was charged beyond its actual cost; the bucket now."""
        limit = self.bucket or ShopifyBucket(maximum=float("inf"))
        with self._bucket_lock:
            available, at = self._buckets[shop]
            available = min(limit.maximum, available + points)
            self._buckets[shop] = (available, at)
            return available

    def _cost(self, requested: float, actual: float | None, available: float) -> dict[str, Any]:
        limit = self.bucket or ShopifyBucket()
        return {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": limit.maximum,
                "currentlyAvailable": min(available, limit.maximum),
                "restoreRate": limit.restore_rate,
            },
        }

    # -- POST /admin/api/{version}/graphql.json -------------------------------------------------
    def graphql(self, request: httpx.Request, version: str) -> httpx.Response:
        if not _VERSION.match(version):
            return self.error(404, "Not Found")
        headers = {"X-Shopify-API-Version": version}
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return json_response(400, {"errors": "Content-Type must be application/json"})
        try:
            body = json.loads(request.content or b"null")
        except ValueError:
            return json_response(400, {"errors": "the request body is not JSON"}, headers)
        query = body.get("query") if isinstance(body, dict) else None
        variables = body.get("variables") if isinstance(body, dict) else None
        variables = variables if isinstance(variables, dict) else {}
        if isinstance(query, str) and "orders(" not in query and _SHOP_QUERY.search(query):
            return self._shop_name(request, headers)
        if not isinstance(query, str) or "orders(" not in query:
            return json_response(
                200,
                self._graphql_error("The sandbox answers the orders query only.", "BAD_REQUEST"),
                headers,
            )
        first = variables.get("first")
        if isinstance(first, bool) or not isinstance(first, int) or not 1 <= first <= MAX_PAGE_SIZE:
            return json_response(
                200,
                self._graphql_error(
                    f"first must be between 1 and {MAX_PAGE_SIZE}.", "BAD_USER_INPUT"
                ),
                headers,
            )
        window = parse_search(variables.get("query"))
        if isinstance(window, str):
            return json_response(200, self._graphql_error(window, "BAD_USER_INPUT"), headers)
        after = None
        if variables.get("after") is not None:
            after = _decode_cursor(variables["after"])
            if after is None:
                return json_response(
                    200,
                    self._graphql_error(
                        "Invalid cursor for current pagination sort.", "BAD_USER_INPUT"
                    ),
                    headers,
                )
        shop = self.shop_of(request)
        requested = float(CONNECTION_COST + first * ORDER_NODE_COST)
        limit = self.bucket or ShopifyBucket()
        if self.bucket is not None and requested > limit.maximum:
            cost = self._cost(requested, None, self._take(shop, 0)[1])
            message = (
                f"Query cost is {requested:g}, which exceeds the single query max cost limit "
                f"({limit.maximum:g})."
            )
            return json_response(
                200,
                self._graphql_error(message, "MAX_COST_EXCEEDED", cost, cost_limit=limit.maximum),
                headers,
            )
        taken, available = self._take(shop, requested)
        if not taken:
            return self._throttled(requested, available, headers)
        since, until = window
        rows = self.book.page(
            shop, now=self.clock(), since=since, until=until, after=after, limit=first + 1
        )
        more, rows = len(rows) > first, rows[:first]
        actual = float(CONNECTION_COST + len(rows) * ORDER_NODE_COST)
        available = self._refund(shop, requested - actual)
        end_cursor = _encode_cursor(rows[-1].effective_at, rows[-1].key) if rows else None
        answer = {
            "data": {
                "orders": {
                    "pageInfo": {"hasNextPage": more, "endCursor": end_cursor},
                    "nodes": [row.doc for row in rows],
                }
            },
            "extensions": {"cost": self._cost(requested, actual, available)},
        }
        return json_response(200, answer, headers)

    def _throttled(
        self, requested: float, available: float, headers: dict[str, str]
    ) -> httpx.Response:
        """Shopify's answer to a query its bucket cannot pay for: 200 with a THROTTLED error."""
        return json_response(
            200,
            self._graphql_error(
                "Throttled",
                "THROTTLED",
                self._cost(requested, None, available),
                documentation="https://shopify.dev/api/usage/rate-limits",
            ),
            headers,
        )

    def _shop_name(self, request: httpx.Request, headers: dict[str, str]) -> httpx.Response:
        """``{ shop { name } }``: the shop's handle in words, at a cost of 1 point."""
        shop = self.shop_of(request)
        requested = float(SHOP_COST)
        taken, available = self._take(shop, requested)
        if not taken:
            return self._throttled(requested, available, headers)
        answer = {
            "data": {"shop": {"name": shop.replace("-", " ").title()}},
            "extensions": {"cost": self._cost(requested, requested, available)},
        }
        return json_response(200, answer, headers)


def _encode_cursor(effective_at: float, key: str) -> str:
    raw = json.dumps({"last_id": key, "last_value": effective_at}, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode()


def _decode_cursor(token: Any) -> tuple[float, str] | None:
    if not isinstance(token, str):
        return None
    try:
        doc = json.loads(base64.b64decode(token, validate=True))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    key, at = doc.get("last_id"), doc.get("last_value")
    if not isinstance(key, str) or isinstance(at, bool) or not isinstance(at, int | float):
        return None
    return float(at), key
