"""Shared by the order mappers' property tests: hostile JSON-ish values, and the check that a
mapped order is what a PostgreSQL (or SQLite) ``orders`` row stores as it is.

The row is built the way the order sync builds it (matching keys, never raw customer data),
inserted in a transaction that is rolled back, and read back equal.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mail_pipeline.db.engine import engine_for, unit_of_work
from mail_pipeline.db.models import Order, Organization
from mail_pipeline.domain.addresses import address_key, email_key
from mail_pipeline.domain.fields import EXTERNAL_ORDER_ID_MAX, unstorable_character
from mail_pipeline.domain.money import MAX_MINOR
from mail_pipeline.domain.orders import SourceOrder

PROPERTY = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    max_examples=int(os.environ.get("ORDER_PROPERTY_EXAMPLES", "150")),
    deadline=None,
)
#: The mappers' clock in the property tests.
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

HOSTILE_TEXT = [
    "",
    " ",
    "\x00",
    "A\x00",
    "\ud800",
    "x\udfff",
    "o" * 128,
    "o" * 129,
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "1999-12-31T23:59:59Z",
    "2026-11-19T12:00:00Z",
    "2026-11-19T12:00:00",
    "2026-11-19T12:00:00+05:30",
    "2026-11-25T12:00:00Z",
    "NaN",
    "Infinity",
    "-1",
    "12.345",
    "1e40",
    "1E+999999",
    "USD",
    "usd",
    "JPY",
    "KWD",
    "XAU",
    "ZZZ",
    "gid://shopify/Order/1",
]

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=20),
)
JSONISH = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def mostly(valid: st.SearchStrategy[Any], junk: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values nine times out of ten: an order has several fields to get right, and
    about half the examples should reach the storage check."""
    return st.integers(min_value=0, max_value=9).flatmap(lambda n: junk if n == 0 else valid)


VALID_TIMES = st.one_of(
    st.datetimes(
        min_value=datetime(2001, 1, 1), max_value=datetime(2026, 11, 20), timezones=st.just(UTC)
    ).map(lambda moment: moment.isoformat()),
    st.integers(min_value=1_000_000_000, max_value=int(NOW.timestamp())),
)
TIMES = mostly(
    VALID_TIMES,
    st.one_of(
        st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
        ).map(lambda moment: moment.isoformat()),
        st.integers(min_value=-(2**40), max_value=2**40),
        st.sampled_from(HOSTILE_TEXT),
        JSONISH,
    ),
)
AMOUNTS = mostly(
    st.one_of(
        st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False).map(str),
        st.floats(min_value=0, max_value=1e6),
        st.integers(min_value=0, max_value=10**6),
    ),
    st.one_of(
        st.decimals(allow_nan=True, allow_infinity=True).map(str),
        st.floats(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from(HOSTILE_TEXT),
        JSONISH,
    ),
)
CURRENCIES = mostly(
    st.sampled_from(["USD", "GBP", "JPY", "KWD", "CLF", "usd", " eur "]),
    st.one_of(st.sampled_from(["XAU", "XXX", "ZZZ", "US", ""]), JSONISH),
)
TEXTS = mostly(
    st.one_of(st.emails(), st.text(max_size=40)),
    st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(min_size=100, max_size=400), JSONISH),
)
IDS = mostly(
    st.one_of(
        st.integers(min_value=1, max_value=2**63),
        st.text(alphabet="ABCDEFGHJK0123456789-/:", min_size=1, max_size=40),
    ),
    st.one_of(st.text(max_size=200), st.sampled_from(HOSTILE_TEXT), JSONISH),
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The value's shape mostly, sometimes anything at all."""
    return mostly(strategy, JSONISH)


def make_organization(db_url: str) -> int:
    """An organization the stored orders can belong to."""
    with unit_of_work(db_url) as session:
        org = Organization(name="Shop", slug=f"shop-{uuid.uuid4().hex[:8]}", country="US")
        session.add(org)
        session.flush()
        return org.id


def assert_storable(db_url: str, organization_id: int, order: SourceOrder) -> None:
    """``order`` fits an ``orders`` row and reads back as it was written."""
    assert order.external_id and len(order.external_id) <= EXTERNAL_ORDER_ID_MAX
    assert not unstorable_character(order.external_id)
    assert 0 <= order.total_minor <= MAX_MINOR and 0 <= order.refunded_minor <= MAX_MINOR
    assert len(order.currency) == 3 and order.currency.isupper()
    for moment in (order.ordered_at, order.updated_at):
        assert moment is None or moment.utcoffset() == timedelta(0)
    place = order.address
    row = {
        "organization_id": organization_id,
        "source": order.source,
        "external_order_id": order.external_id,
        "email_key": email_key(order.email),
        "address_key": None
        if place is None
        else address_key(place.line1, place.postal_code, place.country, place.line2),
        "discount_codes": list(order.discount_codes),
        "total_minor": order.total_minor,
        "refunded_minor": order.refunded_minor,
        "currency": order.currency,
        "ordered_at": order.ordered_at,
        "cancelled": order.cancelled,
        "source_updated_at": order.updated_at,
    }
    engine = engine_for(db_url)
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            conn.execute(sa.insert(Order), [row])
            stored = conn.execute(
                sa.select(*(getattr(Order, name) for name in row)).where(
                    Order.organization_id == row["organization_id"],
                    Order.external_order_id == order.external_id,
                )
            ).one()
        finally:
            transaction.rollback()
    assert dict(stored._mapping) == row
