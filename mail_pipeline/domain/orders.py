"""Orders as the order sources report them, in one shape whatever the source.

Every order client (Klaviyo "Placed Order" events, Ometria orders, Shopify Admin GraphQL)
maps the vendor's payload to :class:`SourceOrder` at the edge; everything downstream (the
upsert, attribution, daily metrics) reads only this. The customer's email and address travel
here only to be reduced to matching keys (``domain.addresses.email_key`` / ``address_key``)
when the order is stored: the raw values are never stored or logged.

:class:`InvalidOrder` is what a client raises for an order it cannot map (no id, no time, a
negative total); the sync reports it, by source and id, and goes on with the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.fields import EXTERNAL_ORDER_ID_MAX, OFFER_CODE_MAX, unstorable_character

#: Orders are read again from this far before the watermark: sources publish late (Klaviyo's
#: event pipeline, a Shopify order edited hours later), and the upsert makes re-reads free.
SAFETY_OVERLAP = timedelta(hours=2)
#: A first sync of an organization and source reads back this far.
FIRST_SYNC_LOOKBACK = timedelta(days=90)


class InvalidOrder(ValueError):
    """An order a source sent that cannot be stored; ``str()`` says which and why."""

    def __init__(self, source: str, external_id: str | None, reason: str) -> None:
        self.source = source
        self.external_id = external_id
        self.reason = reason
        who = f"order {external_id}" if external_id else "an order without an id"
        super().__init__(f"{source} {who}: {reason}")


@dataclass(frozen=True)
class OrderAddress:
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class SourceOrder:
    """One order, normalized at the source's edge.

    ``total_minor`` is the order's total in minor units of ``currency`` (ISO 4217, upper
    case), before refunds; ``refunded_minor`` what was refunded so far. ``updated_at`` is the
    source's own last change (a refund, a cancellation); sources without one leave it None.
    """

    source: IntegrationKind
    external_id: str
    ordered_at: datetime
    total_minor: int
    currency: str
    email: str | None = None
    address: OrderAddress | None = None
    discount_codes: tuple[str, ...] = ()
    cancelled: bool = False
    refunded_minor: int = 0
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        problem = order_problem(self)
        if problem is not None:
            raise InvalidOrder(str(self.source), self.external_id or None, problem)

    @property
    def changed_at(self) -> datetime:
        """The time the watermark follows: the later of the order and its last change."""
        if self.updated_at is not None and self.updated_at > self.ordered_at:
            return self.updated_at
        return self.ordered_at


def normalize_code(code: str) -> str:
    """An offer or discount code as it is matched: trimmed and upper case."""
    return code.strip().upper()


def order_problem(order: SourceOrder) -> str | None:
    """Why ``order`` cannot be stored, or ``None``."""
    if not order.external_id:
        return "it has no id"
    if len(order.external_id) > EXTERNAL_ORDER_ID_MAX:
        return f"its id is longer than {EXTERNAL_ORDER_ID_MAX} characters"
    if unstorable_character(order.external_id):
        return "its id holds a character the database cannot store"
    for moment in (order.ordered_at, order.updated_at):
        if moment is not None and moment.tzinfo is None:
            return "its time has no time zone"
    if order.total_minor < 0:
        return "its total is negative"
    if order.refunded_minor < 0:
        return "its refunded amount is negative"
    if len(order.currency) != 3 or not order.currency.isalpha() or not order.currency.isupper():
        return "its currency is not an ISO 4217 code"
    for code in order.discount_codes:
        if len(code) > OFFER_CODE_MAX * 4 or unstorable_character(code):
            return "a discount code cannot be stored"
    return None


#: Which connected source is an organization's record of orders, best first: the store
#: itself, then the CDPs. A brand on Shopify and Klaviyo sees each Shopify order again as a
#: Klaviyo "Placed Order" event; reading both would count every order twice.
SOURCE_PREFERENCE = (IntegrationKind.SHOPIFY, IntegrationKind.OMETRIA, IntegrationKind.KLAVIYO)


def source_of_record(connected: set[IntegrationKind]) -> IntegrationKind | None:
    """The one source an organization's orders are read from, of those it connected."""
    for kind in SOURCE_PREFERENCE:
        if kind in connected:
            return kind
    return None


def day_window(
    since_day: date, until_day: date | None, timezone: str
) -> tuple[datetime, datetime | None]:
    """An operator's range of days (``until_day`` included) as a UTC read window: from the
    start of ``since_day`` to the end of ``until_day`` in the business's time zone."""
    zone = ZoneInfo(timezone)
    since = datetime.combine(since_day, time.min, tzinfo=zone).astimezone(UTC)
    if until_day is None:
        return since, None
    if until_day < since_day:
        raise ValueError(f"the range ends ({until_day}) before it starts ({since_day})")
    until = datetime.combine(until_day + timedelta(days=1), time.min, tzinfo=zone)
    return since, until.astimezone(UTC)


#: How old an organization's last successful order sync may be before its orders are stale:
#: a few missed ticks of its path (Shopify every 10 s, the others every 5 minutes).
MAX_SYNC_AGE: dict[IntegrationKind, timedelta] = {
    IntegrationKind.SHOPIFY: timedelta(minutes=10),
    IntegrationKind.OMETRIA: timedelta(minutes=20),
    IntegrationKind.KLAVIYO: timedelta(minutes=20),
}


def is_stale(kind: IntegrationKind, last_success_at: datetime | None, now: datetime) -> bool:
    """Whether a source's orders are stale (never synced counts as stale)."""
    return last_success_at is None or now - last_success_at > MAX_SYNC_AGE[kind]
