"""Orders from Klaviyo: the account's "Placed Order" events (integrations.md §3).

:class:`KlaviyoOrderClient` reads ``GET /api/events`` through the organization's
:class:`~mail_pipeline.integrations.klaviyo.client.KlaviyoClient` (the same key, ``revision``
header, timeouts, retries honouring ``Retry-After`` on 429, error mapping and ``links.next``
rules as the segment sync):

- filtered by the placed-order metric and the window:
  ``equals(metric_id,"<id>"),greater-or-equal(datetime,<since>),less-than(datetime,<until>)``,
  sorted by ``datetime``, with ``include=profile`` (the customer's email comes with the
  page), 200 events per page (the documented maximum), cursor pages via ``links.next``;
- the window is widened to whole seconds, never narrowed (Klaviyo's filter takes seconds);
- the metric: the integration's ``placed_order_metric_id`` setting when set; otherwise it is
  found by name (``placed_order_metric``, default "Placed Order") with ``GET /api/metrics``.
  No such metric means the account has recorded no order yet: no orders, no error. Several
  metrics of that name (one per connected store or API source) cannot be told apart: the
  sync fails with a :class:`~mail_pipeline.integrations.errors.RequestRejected` that lists
  them, and an operator sets ``placed_order_metric_id``.

What an event maps to (:func:`order_from_event`), following the properties Klaviyo's
Shopify and custom e-commerce integrations send ("[U]" marks a name taken from those
integrations' examples rather than a specification):

================  ===========================================================================
id                ``OrderId``, else ``$event_id`` (the Shopify integration sets it to the
                  order's id), else the Klaviyo event id
ordered_at        the event's ``datetime`` (else its ``timestamp``, epoch seconds)
total             ``$value`` (the order's total in its currency, before refunds)
currency          ``$currency_code`` [U], else ``Currency`` [U], else ``$extra.currency``
                  (the Shopify order), else the integration's ``currency`` setting; none:
                  the order is rejected
email             the included profile's email, else ``$extra.email``
address           ``ShippingAddress`` {Address1, Address2, City, RegionCode|Region, Zip,
                  CountryCode|Country}, else ``$extra.shipping_address`` {address1, address2,
                  city, province_code|province, zip, country_code|country}, else the billing
                  address in either form
discount codes    ``DiscountCode`` (text), ``Discount Codes`` [U] (list), and the ``code`` of
                  each ``$extra.discount_codes`` entry
cancelled/refund  not carried by "Placed Order" (Klaviyo records them as other metrics): an
                  event is never cancelled and never refunded; ``updated_at`` is None
================  ===========================================================================

An event that cannot be mapped is reported in its page's ``rejected`` (by order id and the
field at fault, never a customer's value); the others are kept.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.orders import InvalidOrder, OrderAddress, SourceOrder
from mail_pipeline.integrations.errors import RequestRejected
from mail_pipeline.integrations.klaviyo.client import VENDOR, KlaviyoClient, MalformedResponse
from mail_pipeline.integrations.orders import mapping
from mail_pipeline.integrations.orders.base import OrderPage
from mail_pipeline.integrations.orders.mapping import Unreadable

log = logging.getLogger(__name__)

SOURCE = IntegrationKind.KLAVIYO
PLACED_ORDER = "Placed Order"
#: "Returns a maximum of 200 events per page" (the spec's schema says 1000; we trust the
#: description).
MAX_PAGE_SIZE = 200
#: Integration settings this client reads.
METRIC_ID_SETTING = "placed_order_metric_id"
METRIC_NAME_SETTING = "placed_order_metric"
CURRENCY_SETTING = "currency"
_METRIC_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def filter_time(moment: datetime, *, up: bool = False) -> str:
    """``moment`` as Klaviyo's filter writes times (whole seconds, UTC, ``Z``): rounded down,
    or up with ``up`` (a window is widened, never narrowed)."""
    if moment.tzinfo is None:
        raise ValueError("order windows must be timezone-aware")
    seconds = moment.timestamp()
    whole = math.ceil(seconds) if up else math.floor(seconds)
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KlaviyoOrderClient:
    """One organization's Klaviyo account as an order source (see the module docstring)."""

    source = SOURCE

    def __init__(
        self,
        client: KlaviyoClient,
        *,
        metric_id: str | None = None,
        metric_name: str = PLACED_ORDER,
        currency: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}")
        self.client = client
        self.metric_id = metric_id
        self.metric_name = metric_name
        self.currency = currency
        self.page_size = page_size
        self.clock = clock

    @classmethod
    def from_settings(
        cls, client: KlaviyoClient, settings: Mapping[str, Any], **options: Any
    ) -> KlaviyoOrderClient:
        """A client configured by the integration's settings (``placed_order_metric_id``,
        ``placed_order_metric``, ``currency``); values of the wrong type are ignored."""

        def setting(name: str) -> str | None:
            value = settings.get(name)
            return value.strip() or None if isinstance(value, str) else None

        return cls(
            client,
            metric_id=setting(METRIC_ID_SETTING),
            metric_name=setting(METRIC_NAME_SETTING) or PLACED_ORDER,
            currency=setting(CURRENCY_SETTING),
            **options,
        )

    # -- the metric -------------------------------------------------------------------------
    def placed_order_metric(self) -> str | None:
        """The placed-order metric's id (see the module docstring); ``None``: no such metric."""
        if self.metric_id is not None:
            if not _METRIC_ID.match(self.metric_id):
                raise RequestRejected(
                    VENDOR, "the integration's placed_order_metric_id is not a Klaviyo metric id"
                )
            return self.metric_id
        found: list[tuple[str, str]] = []
        params = {"fields[metric]": "name,integration"}
        for body in self.client.documents("/api/metrics", params, what="a metrics page"):
            for resource in body["data"]:
                if not isinstance(resource, dict):
                    continue
                attributes = resource.get("attributes")
                name = attributes.get("name") if isinstance(attributes, dict) else None
                metric_id = resource.get("id")
                if name == self.metric_name and isinstance(metric_id, str):
                    integration = attributes.get("integration") if attributes else None
                    source = integration.get("name") if isinstance(integration, dict) else None
                    found.append((metric_id, str(source or "API")))
        if not found:
            log.info("Klaviyo has no %r metric yet: no orders to read", self.metric_name)
            return None
        if len(found) > 1:
            listed = ", ".join(f"{metric_id} ({source})" for metric_id, source in found)
            raise RequestRejected(
                VENDOR,
                f"{len(found)} metrics are called {self.metric_name!r}: {listed}; set the "
                f"integration's {METRIC_ID_SETTING} to the one that records orders",
            )
        self.metric_id = found[0][0]
        return self.metric_id

    def check_access(self) -> str:
        """Read the key's account (``GET /api/accounts``); what was read, in words."""
        account = self.client.account()
        return f"read the account {account.name}"

    # -- orders -----------------------------------------------------------------------------
    def order_pages(self, since: datetime, until: datetime | None = None) -> Iterator[OrderPage]:
        """The placed orders of ``[since, until)``, oldest first, one page per events page."""
        metric_id = self.placed_order_metric()
        if metric_id is None:
            return
        filters = [
            f'equals(metric_id,"{metric_id}")',
            f"greater-or-equal(datetime,{filter_time(since)})",
        ]
        if until is not None:
            filters.append(f"less-than(datetime,{filter_time(until, up=True)})")
        params = {
            "filter": ",".join(filters),
            "sort": "datetime",
            "include": "profile",
            "fields[event]": "datetime,event_properties,timestamp",
            "fields[profile]": "email",
            "page[size]": str(self.page_size),
        }
        for body in self.client.documents("/api/events", params, what="an events page"):
            yield self._page(body)

    def _page(self, body: dict[str, Any]) -> OrderPage:
        emails = _included_emails(body.get("included"))
        now = self.clock()
        return OrderPage.mapped(
            body["data"],
            lambda resource: order_from_event(
                resource, emails, default_currency=self.currency, now=now
            ),
            "Klaviyo",
        )

    def close(self) -> None:
        self.client.close()


def _included_emails(included: Any) -> dict[str, Any]:
    """Profile id -> email of the page's ``included`` profiles."""
    if not isinstance(included, list):
        if included is not None:
            raise MalformedResponse(VENDOR, "an events page's included is not a list")
        return {}
    emails: dict[str, Any] = {}
    for resource in included:
        if isinstance(resource, dict) and resource.get("type") == "profile":
            attributes = resource.get("attributes")
            if isinstance(resource.get("id"), str) and isinstance(attributes, dict):
                emails[resource["id"]] = attributes.get("email")
    return emails


def _lenient(value: Any) -> Mapping[str, Any]:
    """A customer-data object, or ``{}`` when it is not one (the field is dropped)."""
    return value if isinstance(value, dict) else {}


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _custom_address(value: Any) -> OrderAddress | None:
    """An address as custom integrations send it (``Address1``, ``Zip``, ...)."""
    place = _lenient(value)
    return mapping.address(
        place.get("Address1"),
        place.get("Address2"),
        place.get("City"),
        _first(place.get("RegionCode"), place.get("Region")),
        place.get("Zip"),
        _first(place.get("CountryCode"), place.get("Country")),
    )


def _shopify_address(value: Any) -> OrderAddress | None:
    """An address as the Shopify order in ``$extra`` has it (``address1``, ``zip``, ...)."""
    place = _lenient(value)
    return mapping.address(
        place.get("address1"),
        place.get("address2"),
        place.get("city"),
        _first(place.get("province_code"), place.get("province")),
        place.get("zip"),
        _first(place.get("country_code"), place.get("country")),
    )


def _address(props: Mapping[str, Any], extra: Mapping[str, Any]) -> OrderAddress | None:
    """The shipping address (custom form, then the Shopify order's), else the billing one."""
    candidates = (
        _custom_address(props.get("ShippingAddress")),
        _shopify_address(extra.get("shipping_address")),
        _custom_address(props.get("BillingAddress")),
        _shopify_address(extra.get("billing_address")),
    )
    return next((place for place in candidates if place is not None), None)


def _codes(props: Mapping[str, Any], extra: Mapping[str, Any]) -> tuple[str, ...]:
    values: list[Any] = [props.get("DiscountCode")]
    listed = props.get("Discount Codes")
    values.extend(listed if isinstance(listed, list) else [listed])
    shopify = extra.get("discount_codes")
    for entry in shopify if isinstance(shopify, list) else []:
        values.append(entry.get("code") if isinstance(entry, dict) else entry)
    return mapping.codes(values)


def order_from_event(
    resource: Any,
    emails: Mapping[str, Any],
    *,
    default_currency: str | None = None,
    now: datetime | None = None,
) -> SourceOrder:
    """One "Placed Order" event as a :class:`SourceOrder`, or :class:`InvalidOrder`.

    ``emails`` maps profile ids to emails (the page's included profiles)."""
    now = now or _utcnow()
    if not isinstance(resource, dict):
        raise InvalidOrder(SOURCE, None, f"the event is {mapping.kind_of(resource)}")
    try:
        attributes = mapping.obj(resource.get("attributes"), "attributes", required=True)
        props = mapping.obj(attributes.get("event_properties"), "event_properties")
        if props.get("OrderId") is not None:
            external_id = mapping.order_id(props["OrderId"], "OrderId")
        elif props.get("$event_id") is not None:
            external_id = mapping.order_id(props["$event_id"], "$event_id")
        else:
            external_id = mapping.order_id(resource.get("id"), "the event id")
    except Unreadable as exc:
        raise InvalidOrder(SOURCE, None, str(exc)) from None
    try:
        extra = _lenient(props.get("$extra"))
        ordered_at = mapping.moment(
            _first(attributes.get("datetime"), attributes.get("timestamp")), "datetime", now
        )
        currency = mapping.currency(
            _first(
                props.get("$currency_code"),
                props.get("Currency"),
                extra.get("currency"),
                default_currency,
            ),
            "$currency_code",
        )
        total = mapping.minor(props.get("$value"), currency, "$value")
    except Unreadable as exc:
        raise InvalidOrder(SOURCE, external_id, str(exc)) from None
    profile = _lenient(_lenient(_lenient(resource.get("relationships")).get("profile")).get("data"))
    profile_id = profile.get("id")
    email = mapping.text(emails.get(profile_id)) if isinstance(profile_id, str) else None
    return SourceOrder(
        source=SOURCE,
        external_id=external_id,
        ordered_at=ordered_at,
        total_minor=total,
        currency=currency,
        email=email or mapping.text(extra.get("email")),
        address=_address(props, extra),
        discount_codes=_codes(props, extra),
    )
