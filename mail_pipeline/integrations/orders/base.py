"""What the order sync needs from an order source, whichever it is.

One client per organization and source (each holds that organization's credentials). A
client reads the orders placed or changed in a time window, page by page, oldest first, and
maps each to :class:`~mail_pipeline.domain.orders.SourceOrder`; an order it cannot map is
reported in the page's ``rejected`` (never raised), so one odd order never stops a sync.
Vendor failures (authentication, 4xx, 429 or 5xx after the client's own retries) raise the
typed :mod:`~mail_pipeline.integrations.errors`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.orders import InvalidOrder, SourceOrder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderPage:
    orders: tuple[SourceOrder, ...]
    rejected: tuple[InvalidOrder, ...] = ()

    @classmethod
    def mapped(
        cls, items: Iterable[Any], to_order: Callable[[Any], SourceOrder], vendor: str
    ) -> OrderPage:
        """A page of ``to_order`` of each item; an item it refuses (``InvalidOrder``) is
        logged and kept in ``rejected``, the others are mapped."""
        orders: list[SourceOrder] = []
        rejected: list[InvalidOrder] = []
        for item in items:
            try:
                orders.append(to_order(item))
            except InvalidOrder as exc:
                log.warning("%s order rejected: %s", vendor, exc)
                rejected.append(exc)
        return cls(tuple(orders), tuple(rejected))


class OrderClient(Protocol):
    source: IntegrationKind

    def order_pages(self, since: datetime, until: datetime | None = None) -> Iterator[OrderPage]:
        """Orders placed or changed at ``since`` or later (and before ``until``), by page."""
        ...

    def check_access(self) -> str:
        """One harmless read that proves the credentials work (the Klaviyo account, the
        Shopify shop's name, one Ometria order); what was read, in words. Failures raise the
        typed errors (a refused credential is ``AuthenticationFailed``)."""
        ...

    def close(self) -> None: ...
