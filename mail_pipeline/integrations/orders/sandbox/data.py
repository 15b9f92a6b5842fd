"""What the sandbox order sources hold, and how an order looks at each vendor.

:class:`SandboxOrder` is a purchase described once (who, what, when, and what happened to it
later); :class:`OrderSandboxData` writes it into a vendor's sandbox in that vendor's own
shape, as versions the sandbox reveals when their time comes (see ``book``):

- Klaviyo: one "Placed Order" event at the order's time (as Klaviyo's Shopify integration
  records it: ``$event_id``/``OrderId``, ``$value``, ``$currency_code``, ``Discount Codes``,
  ``Items``, ``ShippingAddress``) with its profile (email, or none for an address-only
  customer), under the account's "Placed Order" metric - created on the first order, as
  Klaviyo creates a metric on its first event;
- Ometria: the order at its time (``status`` "complete"), then again when it was cancelled
  ("cancelled") or refunded ("refunded": Ometria reports no amount, so a refund is a full one);
- Shopify: the ``Order`` node at its time, then again with ``cancelledAt`` set, and with
  ``totalRefundedSet`` once refunded, each version's ``updatedAt`` being its time.

Writing the same order again changes nothing (every version is keyed by order and time).
Tests also put raw vendor documents (malformed ones included) with the ``put_*`` methods.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.money import exponent
from mail_pipeline.domain.orders import OrderAddress
from mail_pipeline.integrations.orders.sandbox.book import OrderBook
from mail_pipeline.integrations.sandbox.store import SandboxStore

PLACED_ORDER = "Placed Order"
KLAVIYO_BASE = "https://a.klaviyo.com"


def metrics_collection(account: str) -> str:
    """The store collection of a Klaviyo account's metrics."""
    return f"orders.klaviyo.metrics.{account}"


@dataclass(frozen=True)
class SandboxOrder:
    """A purchase at a sandbox store. ``number`` is the shop's order number (digits, unique
    per store); ``total`` is in the currency's major unit, before refunds."""

    number: str
    ordered_at: datetime
    total: Decimal
    currency: str
    email: str | None = None
    address: OrderAddress | None = None
    discount_codes: tuple[str, ...] = ()
    cancelled_at: datetime | None = None
    refunded: Decimal = Decimal(0)
    refunded_at: datetime | None = None
    items: tuple[str, ...] = field(default=("Gift card",))

    def __post_init__(self) -> None:
        if not self.number.isdigit():
            raise ValueError("a sandbox order number is digits (Shopify ids are numbers)")
        for moment in (self.ordered_at, self.cancelled_at, self.refunded_at):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("sandbox order times must be timezone-aware")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _zulu(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _amount(value: Decimal, currency: str) -> str:
    """Decimal text with the currency's minor digits, as Shopify writes money."""
    return f"{value:.{exponent(currency)}f}"


def _token(*parts: str, length: int = 26) -> str:
    """A deterministic, id-looking token (Klaviyo ids are 26 base32 characters)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:length]


def klaviyo_metric_id(account: str, name: str) -> str:
    """Klaviyo metric ids are six letters and digits."""
    digest = hashlib.sha256(f"{account}\x1f{name}".encode()).hexdigest()
    return base64.b32encode(bytes.fromhex(digest[:8])).decode()[:6]


def _klaviyo_address(place: OrderAddress | None) -> dict[str, Any] | None:
    if place is None:
        return None
    return {
        "Address1": place.line1,
        "Address2": place.line2,
        "City": place.city,
        "RegionCode": place.region,
        "Zip": place.postal_code,
        "CountryCode": place.country,
    }


def klaviyo_event(order: SandboxOrder, account: str, metric_id: str) -> dict[str, Any]:
    """The ``{"event", "profile"}`` document of a "Placed Order" event."""
    event_id = _token("event", account, order.number)
    profile_id = _token("profile", account, order.email or f"order:{order.number}")
    moment = order.ordered_at.astimezone(UTC)
    properties: dict[str, Any] = {
        "$event_id": order.number,
        "OrderId": order.number,
        "$value": float(order.total),
        "$currency_code": order.currency,
        "Discount Codes": list(order.discount_codes),
        "ItemNames": list(order.items),
        "Items": [
            {"ProductName": name, "Quantity": 1, "ItemPrice": float(order.total)}
            for name in order.items[:1]
        ],
    }
    if order.address is not None:
        properties["ShippingAddress"] = _klaviyo_address(order.address)
    event = {
        "type": "event",
        "id": event_id,
        "attributes": {
            "timestamp": int(moment.timestamp()),
            "event_properties": properties,
            "datetime": moment.isoformat(),
            "uuid": _token("uuid", account, order.number, length=32),
        },
        "relationships": {
            "profile": {"data": {"type": "profile", "id": profile_id}},
            "metric": {"data": {"type": "metric", "id": metric_id}},
        },
        "links": {"self": f"{KLAVIYO_BASE}/api/events/{event_id}/"},
    }
    profile = {
        "type": "profile",
        "id": profile_id,
        "attributes": {"email": order.email, "first_name": None, "last_name": None},
        "links": {"self": f"{KLAVIYO_BASE}/api/profiles/{profile_id}/"},
    }
    return {"event": event, "profile": profile}


def _ometria_address(place: OrderAddress | None) -> dict[str, Any] | None:
    if place is None:
        return None
    return {
        "line_1": place.line1,
        "line_2": place.line2,
        "city": place.city,
        "state": place.region,
        "postcode": place.postal_code,
        "country_code": place.country,
    }


def ometria_versions(order: SandboxOrder) -> list[tuple[datetime, dict[str, Any]]]:
    """The order as Ometria reports it after each change."""
    changes = [(order.ordered_at, "complete")]
    if order.cancelled_at is not None:
        changes.append((order.cancelled_at, "cancelled"))
    if order.refunded_at is not None and order.refunded > 0:
        changes.append((order.refunded_at, "refunded"))
    versions = []
    for moment, status in sorted(changes, key=lambda change: change[0]):
        doc: dict[str, Any] = {
            "@type": "order",
            "id": order.number,
            "timestamp": _iso(order.ordered_at),
            "timestamp_update": _iso(moment),
            "grand_total": float(order.total),
            "subtotal": float(order.total),
            "discount": 0.0,
            "shipping": 0.0,
            "currency": order.currency,
            "status": status,
            "is_valid": True,
            "channel": "online",
            "coupon_code": ",".join(order.discount_codes) or None,
            "shipping_address": _ometria_address(order.address),
            "lineitems": [
                {"product": {"title": name}, "quantity": 1, "unit_price": float(order.total)}
                for name in order.items[:1]
            ],
        }
        if order.email is not None:
            doc["customer"] = {"email": order.email}
        versions.append((moment, doc))
    return versions


def _money(value: Decimal, currency: str) -> dict[str, Any]:
    money = {"amount": _amount(value, currency), "currencyCode": currency}
    return {"shopMoney": money, "presentmentMoney": dict(money)}


def shopify_gid(number: str) -> str:
    return f"gid://shopify/Order/{number}"


def shopify_versions(order: SandboxOrder) -> list[tuple[datetime, dict[str, Any]]]:
    """The ``Order`` node as the Admin API returns it after each change."""
    moments = [order.ordered_at]
    moments += [m for m in (order.cancelled_at, order.refunded_at) if m is not None]
    versions = []
    for moment in sorted(moments):
        cancelled = order.cancelled_at is not None and order.cancelled_at <= moment
        refunded = (
            order.refunded
            if order.refunded_at is not None and order.refunded_at <= moment
            else Decimal(0)
        )
        place = order.address
        node = {
            "id": shopify_gid(order.number),
            "name": f"#{order.number}",
            "email": order.email,
            "createdAt": _zulu(order.ordered_at),
            "processedAt": _zulu(order.ordered_at),
            "updatedAt": _zulu(moment),
            "cancelledAt": _zulu(order.cancelled_at) if cancelled and order.cancelled_at else None,
            "currencyCode": order.currency,
            "discountCodes": list(order.discount_codes),
            "totalPriceSet": _money(order.total, order.currency),
            "totalRefundedSet": _money(refunded, order.currency),
            "shippingAddress": None
            if place is None
            else {
                "address1": place.line1,
                "address2": place.line2,
                "city": place.city,
                "provinceCode": place.region,
                "zip": place.postal_code,
                "countryCodeV2": place.country,
            },
            "test": False,
        }
        versions.append((moment, node))
    return versions


def _second(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def _whole_seconds(order: SandboxOrder) -> SandboxOrder:
    """Vendors report times in whole seconds; so do the sandboxes."""
    return replace(
        order,
        ordered_at=_second(order.ordered_at),
        cancelled_at=None if order.cancelled_at is None else _second(order.cancelled_at),
        refunded_at=None if order.refunded_at is None else _second(order.refunded_at),
    )


class OrderSandboxData:
    """Seed and inspect the sandbox order sources (see the module docstring)."""

    def __init__(self, store: SandboxStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.books = {
            vendor: OrderBook(store, vendor) for vendor in ("klaviyo", "ometria", "shopify")
        }

    # -- Klaviyo metrics ---------------------------------------------------------------------
    def klaviyo_metric(self, account: str, name: str = PLACED_ORDER) -> str:
        """The account's metric called ``name``, created if it has none; its id."""
        metric_id = klaviyo_metric_id(account, name)
        self.store.insert_if_absent(
            metrics_collection(account),
            metric_id,
            {
                "type": "metric",
                "id": metric_id,
                "attributes": {
                    "name": name,
                    "created": datetime.fromtimestamp(self.clock(), UTC).isoformat(),
                    "updated": datetime.fromtimestamp(self.clock(), UTC).isoformat(),
                    "integration": {
                        "object": "integration",
                        "name": "Shopify",
                        "category": "eCommerce",
                    },
                },
                "links": {"self": f"{KLAVIYO_BASE}/api/metrics/{metric_id}/"},
            },
        )
        return metric_id

    def klaviyo_metrics(self, account: str) -> list[dict[str, Any]]:
        return [doc for _seq, _key, doc in self.store.scan(metrics_collection(account), limit=1000)]

    def put_klaviyo_metric(self, account: str, resource: dict[str, Any]) -> None:
        """A metric exactly as given (a second "Placed Order", a malformed one)."""
        self.store.put(metrics_collection(account), str(resource.get("id")), resource)

    # -- placing orders ------------------------------------------------------------------------
    def place(self, kind: IntegrationKind | str, account: str, order: SandboxOrder) -> bool:
        """Put ``order`` into ``account`` of the ``kind`` sandbox (for Shopify the account is
        the shop); True when the order was not there yet."""
        kind = IntegrationKind(kind)
        order = _whole_seconds(order)
        if kind is IntegrationKind.KLAVIYO:
            metric_id = self.klaviyo_metric(account)
            doc = klaviyo_event(order, account, metric_id)
            return self.put_klaviyo_event(
                account, doc["event"], doc["profile"], metric_id=metric_id, at=order.ordered_at
            )
        versions = (
            ometria_versions(order) if kind is IntegrationKind.OMETRIA else shopify_versions(order)
        )
        key = order.number if kind is IntegrationKind.OMETRIA else shopify_gid(order.number)
        placed = [
            self.books[kind.value].put(account, key, m.timestamp(), doc) for m, doc in versions
        ]
        return placed[0]

    def put_klaviyo_event(
        self,
        account: str,
        event: Any,
        profile: Any = None,
        *,
        metric_id: str,
        at: datetime,
        key: str | None = None,
    ) -> bool:
        """An event resource as ``GET /api/events`` serves it, under ``metric_id``, with the
        profile resource its page includes (if any)."""
        name = (
            key or (event.get("id") if isinstance(event, dict) else None) or _token("raw", str(at))
        )
        return self.books["klaviyo"].put(
            account, str(name), at.timestamp(), {"event": event, "profile": profile}, tag=metric_id
        )

    def put_ometria_order(self, account: str, doc: Any, *, at: datetime, key: str) -> bool:
        """A raw Ometria order document, served from ``at`` (its ``timestamp_update``)."""
        return self.books["ometria"].put(account, key, at.timestamp(), doc)

    def put_shopify_order(self, shop: str, node: Any, *, at: datetime, key: str) -> bool:
        """A raw ``Order`` node of ``shop``, served from ``at`` (its ``updatedAt``)."""
        return self.books["shopify"].put(shop, key, at.timestamp(), node)

    # -- inspecting ------------------------------------------------------------------------------
    def order_numbers(self, kind: IntegrationKind | str, account: str) -> list[str]:
        """Every order of the account (served yet or not), by key."""
        return self.books[IntegrationKind(kind).value].keys(account)
