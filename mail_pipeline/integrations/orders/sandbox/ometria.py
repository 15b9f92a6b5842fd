"""Ometria's Data API orders endpoint for one account, as the client assumes it
(:mod:`mail_pipeline.integrations.orders.ometria` lists what is documented and what is not).

- ``X-Ometria-Auth`` must carry the account's key: missing or wrong is **403** (Ometria's
  answer to a bad key), ``{"status": 403, "message": ...}``;
- ``GET /v2/orders?orderby=timestamp_update&timestamp_update_from=&timestamp_update_to=
  &limit=&offset=``: a JSON array of the orders whose current version changed in the window,
  by ``(timestamp_update, id)``; ``limit`` 1..250 (default 100); orders whose time has not
  come are not served;
- 4 requests per second: more is **429** with no ``Retry-After`` (Ometria sends none).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from mail_pipeline.integrations.orders.ometria import (
    AUTH_HEADER,
    MAX_PAGE_SIZE,
    RATE_LIMIT,
    SINCE_PARAM,
    UNTIL_PARAM,
)
from mail_pipeline.integrations.orders.sandbox.book import OrderBook
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import (
    SandboxBehaviour,
    SandboxTransport,
    json_response,
)

SANDBOX_API_KEY = "sandbox-ometria-key"


def _time(text: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


class OmetriaSandbox(SandboxTransport):
    vendor = "ometria"
    routes = [("GET", r"/v2/orders", "list_orders")]

    def __init__(
        self,
        store: SandboxStore | None = None,
        behaviour: SandboxBehaviour | None = None,
        *,
        account: str,
        api_key: str = SANDBOX_API_KEY,
        rate_limit: tuple[int, float] | None = RATE_LIMIT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``rate_limit=None`` switches Ometria's limit off."""
        super().__init__(store, behaviour, sleep=sleep, clock=clock)
        self.account = account
        self.api_key = api_key
        self.rate_limit = rate_limit
        self.book = OrderBook(self.store, "ometria")

    def error(self, status: int, message: str, code: str | None = None) -> httpx.Response:
        return json_response(status, {"status": status, "message": message})

    def rate_limited(self, retry_after: float) -> httpx.Response:
        return self.error(429, "Too many requests")

    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        if request.headers.get(AUTH_HEADER.lower(), "") != self.api_key:
            return self.error(403, "Forbidden: invalid or missing API key")
        return None

    def list_orders(self, request: httpx.Request) -> httpx.Response:
        if self.rate_limit is not None and self._take_rate_slot(*self.rate_limit) is not None:
            return self.rate_limited(1.0)
        params = request.url.params
        if params.get("orderby", "timestamp_update") != "timestamp_update":
            return self.error(400, "the sandbox sorts by timestamp_update only")
        window: dict[str, float | None] = {}
        for name in (SINCE_PARAM, UNTIL_PARAM):
            value = params.get(name)
            window[name] = None if value is None else _time(value)
            if value is not None and window[name] is None:
                return self.error(400, f"{name} is not an ISO-8601 time")
        limit_text, offset_text = params.get("limit", "100"), params.get("offset", "0")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE_SIZE:
            return self.error(400, f"limit must be 1..{MAX_PAGE_SIZE}")
        if not offset_text.isdigit():
            return self.error(400, "offset must be a non-negative integer")
        rows = self.book.page(
            self.account,
            now=self.clock(),
            since=window[SINCE_PARAM],
            until=window[UNTIL_PARAM],
            offset=int(offset_text),
            limit=int(limit_text),
        )
        return json_response(200, [row.doc for row in rows])
