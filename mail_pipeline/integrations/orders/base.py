"""What the order sync needs from an order source, whichever it is.

One client per organization and source (each holds that organization's credentials). A
client reads the orders placed or changed in a time window, page by page, oldest first, and
maps each to :class:`~mail_pipeline.domain.orders.SourceOrder`; an order it cannot map is
reported in the page's ``rejected`` (never raised), so one odd order never stops a sync.
Vendor failures (authentication, 4xx, 429 or 5xx after the client's own retries) raise the
typed :mod:`~mail_pipeline.integrations.errors`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.orders import InvalidOrder, SourceOrder


@dataclass(frozen=True)
class OrderPage:
    orders: tuple[SourceOrder, ...]
    rejected: tuple[InvalidOrder, ...] = ()


class OrderClient(Protocol):
    source: IntegrationKind

    def order_pages(self, since: datetime, until: datetime | None = None) -> Iterator[OrderPage]:
        """Orders placed or changed at ``since`` or later (and before ``until``), by page."""
        ...

    def close(self) -> None: ...
