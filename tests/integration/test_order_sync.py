"""The order sync service and its gateway, with fake order clients, on SQLite and (with
MAIL_PIPELINE_TEST_DATABASE_URL) PostgreSQL: idempotent upserts, watermarks with the safety
overlap, operators' windows, one organization's failure isolated, staleness."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import SessionFactory, unit_of_work
from mail_pipeline.db.models import Order, OrderSyncState, Organization, OrganizationIntegration
from mail_pipeline.domain.campaigns import IntegrationKind, OrganizationStatus
from mail_pipeline.domain.orders import (
    FIRST_SYNC_LOOKBACK,
    SAFETY_OVERLAP,
    InvalidOrder,
    OrderAddress,
    SourceOrder,
    day_window,
    source_of_record,
)
from mail_pipeline.integrations.errors import AuthenticationFailed, VendorUnavailable
from mail_pipeline.integrations.orders.base import OrderPage
from mail_pipeline.services.order_sync import (
    Window,
    read_window,
    stale_sources,
    sync_orders,
)

K = IntegrationKind
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def order(
    external_id: str,
    *,
    source: IntegrationKind = K.KLAVIYO,
    at: datetime = NOW - timedelta(hours=1),
    total: int = 4200,
    **fields: object,
) -> SourceOrder:
    return SourceOrder(
        source=source,
        external_id=external_id,
        ordered_at=at,
        total_minor=total,
        currency="USD",
        **fields,  # type: ignore[arg-type]
    )


@dataclass
class FakeClient:
    source: IntegrationKind
    pages: list[OrderPage]
    error: Exception | None = None
    calls: list[tuple[datetime, datetime | None]] = field(default_factory=list)
    closed: bool = False

    def order_pages(self, since: datetime, until: datetime | None = None) -> Iterator[OrderPage]:
        self.calls.append((since, until))
        yield from self.pages
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeSources:
    clients: dict[int, FakeClient]

    def client_for(self, integration: IntegrationRef) -> FakeClient:
        return self.clients[integration.organization_id]


@dataclass
class Shop:
    db_url: str
    n: Iterator[int] = field(default_factory=lambda: iter(range(1, 1000)))

    @property
    def sessions(self) -> SessionFactory:
        return functools.partial(unit_of_work, self.db_url)

    def organization(
        self, *kinds: IntegrationKind, status: OrganizationStatus = OrganizationStatus.ACTIVE
    ) -> int:
        k = next(self.n)
        with unit_of_work(self.db_url) as session:
            org = Organization(name=f"Brand {k}", slug=f"brand-{k}", country="US", status=status)
            session.add(org)
            session.flush()
            for kind in kinds:
                session.add(
                    OrganizationIntegration(
                        organization_id=org.id, kind=kind, secret_ref=f"{kind.upper()}_KEY"
                    )
                )
            return org.id

    def orders(self, organization_id: int) -> dict[str, Order]:
        with unit_of_work(self.db_url) as session:
            rows = session.scalars(select(Order).where(Order.organization_id == organization_id))
            return {o.external_order_id: o for o in rows}

    def state(self, organization_id: int, source: IntegrationKind) -> OrderSyncState | None:
        with unit_of_work(self.db_url) as session:
            return session.get(OrderSyncState, (organization_id, source))


@pytest.fixture
def shop(db_url: str) -> Shop:
    return Shop(db_url)


def test_orders_are_stored_once_as_matching_keys_and_a_change_is_an_update(shop: Shop) -> None:
    org = shop.organization(K.KLAVIYO)
    first = order(
        "A1",
        email="  Ann.Lee@Example.COM ",
        address=OrderAddress("12 North Main Street", None, "New York", "NY", "10017-1234", "US"),
        discount_codes=(" trail-7x2k ", "TRAIL-7X2K", "summer"),
    )
    client = FakeClient(K.KLAVIYO, [OrderPage((first, order("A2")))])
    sources = FakeSources({org: client})

    one = sync_orders(shop.sessions, sources, clock=lambda: NOW)
    again = sync_orders(shop.sessions, sources, clock=lambda: NOW + timedelta(minutes=5))

    assert (one.inserted, one.changed) == (2, 0)
    assert (again.inserted, again.changed) == (0, 0), "re-reading the overlap changes nothing"
    stored = shop.orders(org)
    assert stored["A1"].email_key == "ann.lee@example.com"
    assert stored["A1"].address_key == "US|10017|12 n main st"
    assert stored["A1"].discount_codes == ["SUMMER", "TRAIL-7X2K"]
    before = stored["A1"].updated_at

    refunded = order("A1", refunded_minor=4200, updated_at=NOW, email="ann.lee@example.com")
    client.pages = [OrderPage((refunded,))]
    third = sync_orders(shop.sessions, sources, clock=lambda: NOW + timedelta(minutes=10))

    assert (third.inserted, third.changed) == (0, 1)
    after = shop.orders(org)["A1"]
    assert after.refunded_minor == 4200 and after.updated_at > before
    assert after.address_key is None, "the source's latest word wins"


def test_the_watermark_moves_to_the_read_end_and_the_next_read_overlaps(shop: Shop) -> None:
    org = shop.organization(K.OMETRIA)
    client = FakeClient(K.OMETRIA, [OrderPage((order("O1", source=K.OMETRIA),))])
    sources = FakeSources({org: client})

    sync_orders(shop.sessions, sources, clock=lambda: NOW)
    sync_orders(shop.sessions, sources, clock=lambda: NOW + timedelta(minutes=5))

    assert client.calls == [
        (NOW - FIRST_SYNC_LOOKBACK, NOW),
        (NOW - SAFETY_OVERLAP, NOW + timedelta(minutes=5)),
    ]
    state = shop.state(org, K.OMETRIA)
    assert state is not None
    assert (state.watermark, state.last_error, state.orders_synced) == (
        NOW + timedelta(minutes=5),
        None,
        1,
    )


def test_one_organizations_failure_is_recorded_and_the_others_sync(shop: Shop) -> None:
    good = shop.organization(K.KLAVIYO)
    revoked = shop.organization(K.KLAVIYO)
    storm = shop.organization(K.OMETRIA)
    broken = shop.organization(K.OMETRIA)
    sources = FakeSources(
        {
            good: FakeClient(K.KLAVIYO, [OrderPage((order("G1"),))]),
            revoked: FakeClient(
                K.KLAVIYO, [], error=AuthenticationFailed("klaviyo", "key revoked", status_code=401)
            ),
            storm: FakeClient(
                K.OMETRIA,
                [OrderPage((order("S1", source=K.OMETRIA),))],
                error=VendorUnavailable("ometria", "503 after 5 attempts", status_code=503),
            ),
            broken: FakeClient(K.OMETRIA, [], error=KeyError("total")),
        }
    )

    result = sync_orders(shop.sessions, sources, clock=lambda: NOW)

    errors = {o.organization_id: o.error for o in result.failures}
    assert set(errors) == {revoked, storm, broken}
    assert errors[revoked] == "klaviyo: key revoked (HTTP 401)"
    assert errors[broken] == "unexpected failure: KeyError: 'total'"
    assert set(shop.orders(good)) == {"G1"}
    assert set(shop.orders(storm)) == {"S1"}, "pages read before the failure are kept"
    failed = shop.state(storm, K.OMETRIA)
    assert failed is not None and failed.watermark is None, "the next sync reads it all again"
    assert (failed.last_error or "").startswith("ometria: 503 after 5 attempts")
    assert all(c.closed for c in sources.clients.values())


def test_rejected_orders_are_counted_and_named_not_raised(shop: Shop) -> None:
    org = shop.organization(K.KLAVIYO)
    bad = InvalidOrder("klaviyo", "E9", "its total is negative")
    sources = FakeSources({org: FakeClient(K.KLAVIYO, [OrderPage((order("E1"),), (bad,))])})

    result = sync_orders(shop.sessions, sources, clock=lambda: NOW)

    (outcome,) = result.outcomes
    assert (outcome.inserted, outcome.rejected, outcome.error) == (1, 1, None)
    assert outcome.rejected_named == ["klaviyo order E9: its total is negative"]


def test_each_organization_is_read_from_its_source_of_record_only(shop: Shop) -> None:
    both = shop.organization(K.KLAVIYO, K.SHOPIFY)
    cdp_only = shop.organization(K.KLAVIYO)
    shop.organization(K.SHOPIFY, status=OrganizationStatus.DISABLED)
    clients = {
        both: FakeClient(K.SHOPIFY, [OrderPage((order("S1", source=K.SHOPIFY),))]),
        cdp_only: FakeClient(K.KLAVIYO, [OrderPage((order("K1"),))]),
    }

    periodic = sync_orders(
        shop.sessions, FakeSources(clients), kinds=[K.KLAVIYO, K.OMETRIA], clock=lambda: NOW
    )
    shopify = sync_orders(shop.sessions, FakeSources(clients), kinds=[K.SHOPIFY], clock=lambda: NOW)

    assert [(o.organization_id, o.source) for o in periodic.outcomes] == [(cdp_only, K.KLAVIYO)]
    assert [(o.organization_id, o.source) for o in shopify.outcomes] == [(both, K.SHOPIFY)]
    assert source_of_record({K.KLAVIYO, K.OMETRIA}) is K.OMETRIA


def test_an_operators_range_of_days_reads_those_days_and_leaves_the_watermark(shop: Shop) -> None:
    org = shop.organization(K.KLAVIYO)
    client = FakeClient(K.KLAVIYO, [OrderPage((order("K1"),))])
    sources = FakeSources({org: client})
    sync_orders(shop.sessions, sources, clock=lambda: NOW)
    since, until = day_window(date(2026, 11, 1), date(2026, 11, 7), "America/New_York")

    sync_orders(
        shop.sessions,
        sources,
        organization_ids=[org],
        window=Window(since, until),
        clock=lambda: NOW + timedelta(hours=1),
    )

    assert client.calls[-1] == (
        datetime(2026, 11, 1, 4, 0, tzinfo=UTC),  # midnight EDT
        datetime(2026, 11, 8, 5, 0, tzinfo=UTC),  # midnight EST: the week crossed the DST end
    )
    state = shop.state(org, K.KLAVIYO)
    assert state is not None and state.watermark == NOW


def test_read_window_rules() -> None:
    assert read_window(None, None, NOW) == (NOW - FIRST_SYNC_LOOKBACK, NOW)
    later = NOW + timedelta(days=3)  # a clock that went back: never read from the future
    assert read_window(later, None, NOW) == (NOW - SAFETY_OVERLAP, NOW)
    assert read_window(NOW, Window(NOW - timedelta(days=2)), NOW) == (NOW - timedelta(days=2), NOW)
    with pytest.raises(ValueError, match="ends"):
        day_window(date(2026, 11, 7), date(2026, 11, 1), "America/New_York")


def test_stale_sources_name_the_organization_and_its_last_error(shop: Shop) -> None:
    fresh = shop.organization(K.SHOPIFY)
    never = shop.organization(K.KLAVIYO)
    failing = shop.organization(K.OMETRIA)
    sources = FakeSources(
        {
            fresh: FakeClient(K.SHOPIFY, []),
            failing: FakeClient(K.OMETRIA, [], error=VendorUnavailable("ometria", "down")),
        }
    )
    sync_orders(shop.sessions, sources, organization_ids=[fresh, failing], clock=lambda: NOW)

    stale = stale_sources(shop.sessions, clock=lambda: NOW + timedelta(minutes=5))

    assert [(s.organization_id, s.source) for s in stale] == [
        (never, K.KLAVIYO),
        (failing, K.OMETRIA),
    ]
    assert stale[1].last_error == "ometria: down"
    later = stale_sources(shop.sessions, clock=lambda: NOW + timedelta(minutes=11))
    assert fresh in {s.organization_id for s in later}, "Shopify is stale after 10 minutes"
