"""The sandbox shopper (local and test only): customers who buy after a postcard arrives, so
the demo's orders, attributions and metrics have something true to find.

:func:`go_shopping` looks at the mailed (Sent, Received) and held-out recipients of every
organization with an order source, and places their orders in that organization's sandbox
sources - Shopify, Ometria, and Klaviyo when its integration records placed orders (its
settings name ``placed_order_metric_id`` or ``placed_order_metric``). A store connected to
several sources reports each order to each of them, as real stores do (the order sync reads
one source of record per organization).

What a recipient does is decided from ``(seed, recipient id)`` alone, so every run decides the
same and placing is idempotent (an order's number, versions and times are the same each
time): re-runs add nothing twice. What happens, with the :class:`ShopperPlan`'s odds:

- a mailed recipient buys with ``mailed_buy_rate``, a held-out one with ``holdout_buy_rate``
  (lower: the postcard works), at a time after the mail date (or the hold-out) drawn
  log-uniformly between ``min_delay`` and ``max_delay`` - minutes for some, weeks for most;
- a buyer orders by email (with the address), by address only (no email), or - a mailed
  recipient with an ``offer_code`` - redeeming the code, half the time as someone else (a
  gift: another email and address, so only the code ties the order to the postcard);
- an order's total is zero (a free replacement) with ``zero_total_rate``; it is cancelled
  later with ``cancel_rate``, refunded later (in full or in part) with ``refund_rate``;
- for each recipient looked at, an unrelated customer buys too with ``stranger_rate``.

Orders due later are written now with their future times: the sandboxes reveal each order,
and each later change (a refund), only when its time comes. Each organization is read from
the last run's time less :data:`OVERLAP` (kept in the sandbox store), so a tick looks only at
recently mailed recipients.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.shoppers import Prospect, ShopperGateway, ShoppingOrganization
from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.orders import OrderAddress
from mail_pipeline.integrations.orders.klaviyo import METRIC_ID_SETTING, METRIC_NAME_SETTING
from mail_pipeline.integrations.orders.sandbox import (
    OrderSandboxData,
    SandboxOrder,
    sandbox_account,
)
from mail_pipeline.integrations.sandbox.store import SandboxStore

ORDER_SOURCES = (IntegrationKind.SHOPIFY, IntegrationKind.OMETRIA, IntegrationKind.KLAVIYO)
#: Recipients mailed this long before the last run are looked at again (placing is
#: idempotent; a mailing run may commit a little after it stamped ``sent_at``).
OVERLAP = timedelta(minutes=15)
#: Where the shopper remembers, per organization, when it last looked.
STATE = "orders.shopper.state"
CURRENCIES = {"US": "USD", "GB": "GBP", "CA": "CAD", "AU": "AUD", "IE": "EUR", "DE": "EUR"}
_STREETS = ["Birch Road", "Quarry Lane", "Harbor Street", "Orchard Way", "Linden Avenue"]
_PRODUCTS = ["Trail boots", "Wool socks", "Camp mug", "Rain shell", "Candle set", "Tea tin"]


@dataclass(frozen=True)
class ShopperPlan:
    """The odds and delays the shopper draws from (see the module docstring)."""

    seed: int = 20261130
    mailed_buy_rate: float = 0.35
    holdout_buy_rate: float = 0.15
    #: Of buyers: by email, by address only, by offer code (the last only with a code).
    identity_weights: tuple[float, float, float] = (0.45, 0.2, 0.35)
    zero_total_rate: float = 0.05
    cancel_rate: float = 0.06
    refund_rate: float = 0.1
    stranger_rate: float = 0.5
    min_delay: timedelta = timedelta(minutes=1)
    max_delay: timedelta = timedelta(days=21)


@dataclass
class ShoppingResult:
    organizations: int = 0
    recipients: int = 0
    #: Orders decided this run (new or not), by kind: email, address, offer_code, holdout,
    #: stranger, zero_total, cancelled, refunded.
    kinds: Counter[str] = field(default_factory=Counter)
    #: Orders put into a sandbox source for the first time (one order in two sources: 2).
    new_orders: int = 0


def records_orders(integration: IntegrationRef) -> bool:
    """Whether the sandbox reports the organization's orders to this integration."""
    if integration.kind is not IntegrationKind.KLAVIYO:
        return True
    return any(integration.settings.get(name) for name in (METRIC_ID_SETTING, METRIC_NAME_SETTING))


def _number(seed: int, recipient_id: int, n: int) -> str:
    digest = hashlib.sha256(f"{seed}:{recipient_id}:{n}".encode()).hexdigest()
    return str(int(digest[:12], 16))


def _delay(rng: random.Random, low: timedelta, high: timedelta) -> timedelta:
    """Log-uniform between ``low`` and ``high``: many soon, a long tail later."""
    a, b = math.log(low.total_seconds()), math.log(high.total_seconds())
    return timedelta(seconds=round(math.exp(rng.uniform(a, b))))


def _total(rng: random.Random) -> Decimal:
    return Decimal(round(rng.lognormvariate(math.log(60), 0.6), 2)).quantize(Decimal("0.01"))


def _address(prospect: Prospect) -> OrderAddress | None:
    if not (prospect.address1 and prospect.postal_code):
        return None
    return OrderAddress(
        prospect.address1,
        prospect.address2,
        prospect.city,
        prospect.region,
        prospect.postal_code,
        prospect.country,
    )


def _elsewhere(rng: random.Random, number: str, country: str) -> tuple[str, OrderAddress]:
    """Someone unrelated: their own email and an address nobody was mailed at."""
    street = f"{rng.randint(1000, 9999)} {rng.choice(_STREETS)}"
    if country == "GB":
        place = OrderAddress(street, None, "Leeds", None, "LS1 4AP", "GB")
    else:
        place = OrderAddress(street, None, "Madison", "WI", "53703", country or "US")
    return f"shopper.{number}@example.net", place


@dataclass(frozen=True)
class _Decision:
    kind: str
    order: SandboxOrder


def decide(prospect: Prospect, country: str, plan: ShopperPlan) -> list[_Decision]:
    """What ``prospect`` (and a stranger beside them) buy: a pure function of the plan's seed
    and the recipient id."""
    rng = random.Random(f"{plan.seed}:{prospect.recipient_id}")
    currency = CURRENCIES.get(country, "USD")
    decisions: list[_Decision] = []
    buy_rate = plan.holdout_buy_rate if prospect.holdout else plan.mailed_buy_rate
    buys = rng.random() < buy_rate
    if buys:
        decided = _own_order(rng, prospect, country, currency, plan)
        if decided is not None:
            decisions.append(decided)
    if rng.random() < plan.stranger_rate:
        number = _number(plan.seed, prospect.recipient_id, 2)
        email, place = _elsewhere(rng, number, country)
        decisions.append(
            _Decision(
                "stranger",
                _outcome(
                    rng,
                    plan,
                    number=number,
                    at=prospect.since + _delay(rng, plan.min_delay, plan.max_delay),
                    currency=currency,
                    email=email,
                    address=place,
                    codes=(),
                ),
            )
        )
    return decisions


def _own_order(
    rng: random.Random, prospect: Prospect, country: str, currency: str, plan: ShopperPlan
) -> _Decision | None:
    number = _number(plan.seed, prospect.recipient_id, 1)
    place = _address(prospect)
    identities = ["email", "address", "offer_code"]
    weights = list(plan.identity_weights)
    if prospect.holdout or not prospect.offer_code:
        weights[2] = 0.0
    if not prospect.email:
        weights[0] = 0.0
    if place is None:
        weights[1] = 0.0
    if not any(weights):
        return None
    identity = rng.choices(identities, weights)[0]
    email: str | None = prospect.email
    codes: tuple[str, ...] = ()
    if identity == "address":
        email = None
    elif identity == "offer_code":
        codes = (str(prospect.offer_code),)
        if rng.random() < 0.5:  # a gift: only the code points at the postcard
            email, place = _elsewhere(rng, number, country)
    order = _outcome(
        rng,
        plan,
        number=number,
        at=prospect.since + _delay(rng, plan.min_delay, plan.max_delay),
        currency=currency,
        email=email,
        address=place,
        codes=codes,
    )
    return _Decision("holdout" if prospect.holdout else identity, order)


def _outcome(
    rng: random.Random,
    plan: ShopperPlan,
    *,
    number: str,
    at: datetime,
    currency: str,
    email: str | None,
    address: OrderAddress | None,
    codes: tuple[str, ...],
) -> SandboxOrder:
    total = Decimal(0) if rng.random() < plan.zero_total_rate else _total(rng)
    cancelled_at = None
    if rng.random() < plan.cancel_rate:
        cancelled_at = at + _delay(rng, timedelta(minutes=2), timedelta(days=2))
    refunded, refunded_at = Decimal(0), None
    if total > 0 and cancelled_at is None and rng.random() < plan.refund_rate:
        share = Decimal(1) if rng.random() < 0.6 else Decimal(rng.randint(20, 80)) / 100
        refunded = (total * share).quantize(Decimal("0.01"))
        refunded_at = at + _delay(rng, timedelta(minutes=10), timedelta(days=7))
    return SandboxOrder(
        number=number,
        ordered_at=at.astimezone(UTC).replace(microsecond=0),
        total=total,
        currency=currency,
        email=email,
        address=address,
        discount_codes=codes,
        cancelled_at=cancelled_at,
        refunded=refunded,
        refunded_at=refunded_at,
        items=(rng.choice(_PRODUCTS),),
    )


def _kinds(decision: _Decision) -> list[str]:
    order = decision.order
    kinds = [decision.kind]
    if order.total == 0:
        kinds.append("zero_total")
    if order.cancelled_at is not None:
        kinds.append("cancelled")
    if order.refunded_at is not None:
        kinds.append("refunded")
    return kinds


def go_shopping(
    sessions: SessionFactory,
    store: SandboxStore,
    *,
    plan: ShopperPlan | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ShoppingResult:
    """One round of shopping (see the module docstring); idempotent."""
    plan = plan or ShopperPlan()
    now = clock()
    with sessions() as session:
        organizations = ShopperGateway(session).organizations(ORDER_SOURCES)
    data = OrderSandboxData(store)
    result = ShoppingResult()
    for organization in organizations:
        sources = _sources(organization)
        if not sources:
            continue
        state_key = str(organization.organization_id)
        state = store.get(STATE, state_key)
        since = None if state is None else datetime.fromisoformat(state["read_at"]) - OVERLAP
        with sessions() as session:
            prospects = ShopperGateway(session).prospects(organization.organization_id, since)
        result.organizations += 1
        result.recipients += len(prospects)
        with store.transaction():
            for prospect in prospects:
                for decision in decide(prospect, organization.country, plan):
                    result.kinds.update(_kinds(decision))
                    for kind, account in sources:
                        result.new_orders += data.place(kind, account, decision.order)
            store.put(STATE, state_key, {"read_at": now.isoformat()})
    return result


def _sources(organization: ShoppingOrganization) -> list[tuple[IntegrationKind, str]]:
    """The organization's sandbox sources that record its orders, with their accounts (a
    Shopify integration without a usable ``shop`` is left out)."""
    sources = []
    for integration in organization.integrations:
        if not records_orders(integration):
            continue
        try:
            account = sandbox_account(
                integration.kind, organization.organization_id, integration.settings
            )
        except ValueError:
            continue
        sources.append((integration.kind, account))
    return sources
