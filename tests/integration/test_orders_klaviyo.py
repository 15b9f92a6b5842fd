"""Klaviyo "Placed Order" events as orders: the client against its sandbox, against Klaviyo's
error shapes (respx), and the event mapper against any JSON-ish event (hypothesis)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from hypothesis import event as event_
from hypothesis import given
from hypothesis import strategies as st

from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.orders import InvalidOrder, OrderAddress, SourceOrder
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    NotFound,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.klaviyo.client import KlaviyoClient, MalformedResponse
from mail_pipeline.integrations.klaviyo.sandbox import SANDBOX_API_KEY
from mail_pipeline.integrations.orders.base import OrderPage
from mail_pipeline.integrations.orders.klaviyo import KlaviyoOrderClient, order_from_event
from mail_pipeline.integrations.orders.sandbox import KlaviyoOrdersSandbox, OrderSandboxData
from mail_pipeline.integrations.orders.sandbox.data import SandboxOrder
from mail_pipeline.integrations.sandbox.store import SandboxStore
from tests.order_payloads import (
    AMOUNTS,
    CURRENCIES,
    IDS,
    JSONISH,
    NOW,
    PROPERTY,
    TEXTS,
    TIMES,
    assert_storable,
    make_organization,
    maybe,
    mostly,
)

K = IntegrationKind
ACCOUNT = "organization-7"
BASE = "https://a.klaviyo.com"
T0 = datetime(2026, 11, 19, 12, 0, tzinfo=UTC)


class Clock:
    """Time that only moves when someone sleeps (or a test moves it)."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now.timestamp()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> SandboxStore:
    return SandboxStore(":memory:")


@pytest.fixture
def data(store: SandboxStore, clock: Clock) -> OrderSandboxData:
    return OrderSandboxData(store, clock=clock)


def sandbox_client(
    store: SandboxStore, clock: Clock, *, key: str = SANDBOX_API_KEY, **options: Any
) -> KlaviyoOrderClient:
    sandbox = KlaviyoOrdersSandbox(store, account=ACCOUNT, sleep=clock.sleep, clock=clock)
    client = KlaviyoClient(
        key,
        transport=sandbox,
        sleep=clock.sleep,
        retry=RetryPolicy(max_attempts=3, base_delay=0.01),
    )
    return KlaviyoOrderClient(client, clock=clock.utc, **options)


def purchase(number: int, at: datetime, **fields: Any) -> SandboxOrder:
    values: dict[str, Any] = {
        "total": Decimal("19.99"),
        "currency": "USD",
        "email": f"buyer{number}@example.com",
        "address": OrderAddress("12 N Main St", "Apt 4", "Austin", "TX", "78701", "US"),
    }
    values.update(fields)
    return SandboxOrder(number=str(number), ordered_at=at, **values)


def read_all(
    client: KlaviyoOrderClient, since: datetime, until: datetime | None = None
) -> list[OrderPage]:
    return list(client.order_pages(since, until))


def ids(pages: list[OrderPage]) -> list[str]:
    return [order.external_id for page in pages for order in page.orders]


# -- against the sandbox ------------------------------------------------------------------


def test_pages_follow_links_next_oldest_first(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    for n in (5, 3, 1, 4, 2):  # placed out of order; served by time
        data.place(K.KLAVIYO, ACCOUNT, purchase(1000 + n, T0 + timedelta(minutes=n)))

    pages = read_all(sandbox_client(store, clock, page_size=2), T0)

    assert [len(page.orders) for page in pages] == [2, 2, 1]
    assert ids(pages) == ["1001", "1002", "1003", "1004", "1005"]


def test_the_window_includes_since_excludes_until_and_widens_to_whole_seconds(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    for n, seconds in enumerate((0, 10, 20)):
        data.place(K.KLAVIYO, ACCOUNT, purchase(2000 + n, T0 + timedelta(seconds=seconds)))
    client = sandbox_client(store, clock)

    assert ids(read_all(client, T0 + timedelta(seconds=10), T0 + timedelta(seconds=20))) == ["2001"]
    # 10.4 s is read from 10 s, 19.2 s up to (not including) 20 s: never narrower than asked
    widened = read_all(client, T0 + timedelta(seconds=10.4), T0 + timedelta(seconds=19.2))
    assert ids(widened) == ["2001"]
    assert ids(read_all(client, T0)) == ["2000", "2001", "2002"]


def test_orders_placed_later_are_not_served_until_their_time(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    data.place(K.KLAVIYO, ACCOUNT, purchase(3000, clock.utc() + timedelta(hours=1)))
    client = sandbox_client(store, clock)

    assert ids(read_all(client, T0)) == []
    clock.now += 2 * 3600
    assert ids(read_all(client, T0)) == ["3000"]


def test_every_field_of_an_order_is_mapped(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    data.place(
        K.KLAVIYO,
        ACCOUNT,
        purchase(4001, T0, discount_codes=("trail20", "VIP")),
    )
    data.place(K.KLAVIYO, ACCOUNT, purchase(4002, T0 + timedelta(seconds=1), email=None))
    data.place(
        K.KLAVIYO,
        ACCOUNT,
        purchase(4003, T0 + timedelta(seconds=2), total=Decimal(1500), currency="JPY"),
    )

    [page] = read_all(sandbox_client(store, clock), T0)

    first, address_only, yen = page.orders
    assert first == SourceOrder(
        source=K.KLAVIYO,
        external_id="4001",
        ordered_at=T0,
        total_minor=1999,
        currency="USD",
        email="buyer4001@example.com",
        address=OrderAddress("12 N Main St", "Apt 4", "Austin", "TX", "78701", "US"),
        discount_codes=("TRAIL20", "VIP"),
    )
    assert address_only.email is None and address_only.address is not None
    assert (yen.total_minor, yen.currency) == (1500, "JPY")
    assert page.rejected == ()


def test_the_placed_order_metric_is_found_by_name_once(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    for n in range(3):
        data.place(K.KLAVIYO, ACCOUNT, purchase(5000 + n, T0 + timedelta(seconds=n)))
    data.klaviyo_metric(ACCOUNT, "Opened Email")
    client = sandbox_client(store, clock, page_size=2)

    assert ids(read_all(client, T0)) == ["5000", "5001", "5002"]
    assert client.metric_id == data.klaviyo_metric(ACCOUNT)
    sandbox = client.client.api.transport
    assert isinstance(sandbox, KlaviyoOrdersSandbox)
    before = sandbox.request_count
    read_all(client, T0)
    assert sandbox.request_count - before == 2, "two event pages, no second metrics lookup"


def test_an_account_without_the_metric_has_no_orders_yet(store: SandboxStore, clock: Clock) -> None:
    assert read_all(sandbox_client(store, clock), T0) == []


def test_two_metrics_of_that_name_fail_the_sync_and_name_them(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    data.place(K.KLAVIYO, ACCOUNT, purchase(6000, T0))
    data.put_klaviyo_metric(
        ACCOUNT,
        {"type": "metric", "id": "ApI123", "attributes": {"name": "Placed Order"}},
    )
    with pytest.raises(RequestRejected, match="2 metrics are called 'Placed Order'") as refused:
        read_all(sandbox_client(store, clock), T0)
    assert "ApI123 (API)" in str(refused.value) and "placed_order_metric_id" in str(refused.value)


def test_the_metric_id_setting_is_used_as_it_is(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    data.place(K.KLAVIYO, ACCOUNT, purchase(6100, T0))
    data.put_klaviyo_metric(
        ACCOUNT, {"type": "metric", "id": "ApI123", "attributes": {"name": "Placed Order"}}
    )
    metric_id = data.klaviyo_metric(ACCOUNT)
    sandbox = KlaviyoOrdersSandbox(store, account=ACCOUNT, clock=clock)
    client = KlaviyoOrderClient.from_settings(
        KlaviyoClient(SANDBOX_API_KEY, transport=sandbox),
        {"placed_order_metric_id": metric_id, "currency": 7},
        clock=clock.utc,
    )
    assert ids(read_all(client, T0)) == ["6100"]
    with pytest.raises(RequestRejected, match="not a Klaviyo metric id"):
        read_all(
            KlaviyoOrderClient.from_settings(
                KlaviyoClient(SANDBOX_API_KEY, transport=sandbox),
                {"placed_order_metric_id": 'x") OR equals(metric_id,"y'},
            ),
            T0,
        )


def _raw_event(event_id: str, properties: dict[str, Any], at: datetime = T0) -> dict[str, Any]:
    return {
        "type": "event",
        "id": event_id,
        "attributes": {
            "datetime": at.isoformat(),
            "timestamp": int(at.timestamp()),
            "event_properties": properties,
        },
        "relationships": {"profile": {"data": {"type": "profile", "id": "P1"}}},
    }


def test_events_that_cannot_be_mapped_are_reported_and_the_others_kept(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    metric_id = data.klaviyo_metric(ACCOUNT)
    data.place(K.KLAVIYO, ACCOUNT, purchase(7000, T0))
    bad = {
        "E-NOVALUE": _raw_event("E-NOVALUE", {"OrderId": "7001", "$currency_code": "USD"}),
        "E-GOLD": _raw_event("E-GOLD", {"OrderId": "7002", "$value": 5, "$currency_code": "XAU"}),
        "E-FUTURE": _raw_event(
            "E-FUTURE",
            {"OrderId": "7003", "$value": 5, "$currency_code": "USD"},
            at=NOW + timedelta(days=3),
        ),
        "E-NUL": _raw_event("E-NUL", {"OrderId": "70\x0004", "$value": 5}),
    }
    for n, (key, event) in enumerate(bad.items(), start=1):
        data.put_klaviyo_event(
            ACCOUNT, event, metric_id=metric_id, at=T0 + timedelta(seconds=n), key=key
        )

    [page] = read_all(sandbox_client(store, clock), T0)

    assert ids([page]) == ["7000"]
    reasons = sorted(str(r) for r in page.rejected)
    assert reasons == [
        "klaviyo an order without an id: OrderId holds a character the database cannot store",
        "klaviyo order 7001: $value is missing",
        "klaviyo order 7002: $currency_code is refused: XAU has no minor unit; it is not a "
        "currency of orders",
        "klaviyo order 7003: datetime is more than a day in the future",
    ]


def test_a_wrong_key_is_an_authentication_failure(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    data.place(K.KLAVIYO, ACCOUNT, purchase(8000, T0))
    with pytest.raises(AuthenticationFailed):
        read_all(sandbox_client(store, clock, key="pk_someone_else"), T0)


def test_the_integrations_currency_fills_in_for_events_without_one(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    metric_id = data.klaviyo_metric(ACCOUNT)
    data.put_klaviyo_event(
        ACCOUNT, _raw_event("E1", {"OrderId": "8100", "$value": "12.5"}), metric_id=metric_id, at=T0
    )
    [page] = read_all(sandbox_client(store, clock, currency="GBP"), T0)
    assert [(o.total_minor, o.currency) for o in page.orders] == [(1250, "GBP")]


# -- Klaviyo's error shapes (respx) ---------------------------------------------------------


def jsonapi(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status, json=body, headers={"content-type": "application/vnd.api+json", **(headers or {})}
    )


def klaviyo_error(status: int, detail: str, code: str) -> httpx.Response:
    return jsonapi(
        {"errors": [{"id": "x", "code": code, "title": "t", "detail": detail, "source": {}}]},
        status,
    )


EVENT = _raw_event("E1", {"OrderId": "9000", "$value": 10, "$currency_code": "USD"})


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def respx_client(sleeps: list[float]) -> KlaviyoOrderClient:
    client = KlaviyoClient(
        "pk_live", sleep=sleeps.append, retry=RetryPolicy(max_attempts=3, base_delay=0.01)
    )
    return KlaviyoOrderClient(client, metric_id="ABC123", clock=lambda: NOW)


@respx.mock
def test_the_request_is_the_documented_one(respx_client: KlaviyoOrderClient) -> None:
    route = respx.get(f"{BASE}/api/events").mock(
        return_value=jsonapi({"data": [EVENT], "links": {"next": None}})
    )
    pages = read_all(respx_client, T0, T0 + timedelta(days=1, microseconds=500_000))

    assert ids(pages) == ["9000"]
    request = route.calls.last.request
    params = request.url.params
    assert params["filter"] == (
        'equals(metric_id,"ABC123"),greater-or-equal(datetime,2026-11-19T12:00:00Z),'
        "less-than(datetime,2026-11-20T12:00:01Z)"
    )
    assert (params["sort"], params["include"], params["page[size]"]) == (
        "datetime",
        "profile",
        "200",
    )
    assert params["fields[profile]"] == "email"
    assert request.headers["authorization"] == "Klaviyo-API-Key pk_live"
    assert request.headers["revision"] == "2026-07-15"


@respx.mock
@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_authentication_failures(
    respx_client: KlaviyoOrderClient, status: int
) -> None:
    respx.get(f"{BASE}/api/events").mock(
        return_value=klaviyo_error(
            status, "Incorrect authentication credentials.", "not_authenticated"
        )
    )
    with pytest.raises(AuthenticationFailed, match="Incorrect authentication credentials"):
        read_all(respx_client, T0)


@respx.mock
def test_not_found_is_typed(respx_client: KlaviyoOrderClient) -> None:
    respx.get(f"{BASE}/api/events").mock(return_value=klaviyo_error(404, "Not found.", "not_found"))
    with pytest.raises(NotFound):
        read_all(respx_client, T0)


@respx.mock
def test_429_waits_out_retry_after(respx_client: KlaviyoOrderClient, sleeps: list[float]) -> None:
    respx.get(f"{BASE}/api/events").mock(
        side_effect=[
            jsonapi({"errors": [{"detail": "throttled"}]}, 429, {"Retry-After": "3"}),
            jsonapi({"data": [EVENT], "links": {"next": None}}),
        ]
    )
    assert ids(read_all(respx_client, T0)) == ["9000"]
    assert sleeps == [3.0]


@respx.mock
def test_429_without_retry_after_backs_off_then_gives_up_typed(
    respx_client: KlaviyoOrderClient, sleeps: list[float]
) -> None:
    respx.get(f"{BASE}/api/events").mock(return_value=klaviyo_error(429, "throttled", "throttled"))
    with pytest.raises(RateLimited):
        read_all(respx_client, T0)
    assert len(sleeps) == 2 and all(0.005 <= s <= 0.02 for s in sleeps)


@respx.mock
def test_a_5xx_storm_is_vendor_unavailable(
    respx_client: KlaviyoOrderClient, sleeps: list[float]
) -> None:
    respx.get(f"{BASE}/api/events").mock(return_value=klaviyo_error(503, "down", "error"))
    with pytest.raises(VendorUnavailable):
        read_all(respx_client, T0)
    assert len(sleeps) == 2


@respx.mock
@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>502</html>", "an events page is not JSON"),
        (b'{"data": {}}', "an events page has no data list"),
        (b'{"data": [], "included": {}}', "included is not a list"),
        (b'{"data": [], "links": {"next": "https://evil.example/api/events"}}', "another host"),
    ],
)
def test_malformed_pages_are_typed(
    respx_client: KlaviyoOrderClient, body: bytes, match: str
) -> None:
    respx.get(f"{BASE}/api/events").mock(
        return_value=httpx.Response(200, content=body, headers={"content-type": "application/json"})
    )
    with pytest.raises(MalformedResponse, match=match):
        read_all(respx_client, T0)


@respx.mock
def test_metrics_are_read_page_by_page(sleeps: list[float]) -> None:
    metric = {"type": "metric", "id": "PO1", "attributes": {"name": "Placed Order"}}
    other = {"type": "metric", "id": "OE1", "attributes": {"name": "Opened Email"}}
    respx.get(f"{BASE}/api/metrics").mock(
        side_effect=[
            jsonapi({"data": [other], "links": {"next": f"{BASE}/api/metrics?page%5Bcursor%5D=2"}}),
            jsonapi({"data": [metric], "links": {"next": None}}),
        ]
    )
    client = KlaviyoOrderClient(KlaviyoClient("pk_live", sleep=sleeps.append))
    assert client.placed_order_metric() == "PO1"


# -- the mapper -------------------------------------------------------------------------------


def test_shopify_integration_events_map_from_extra() -> None:
    resource = {
        "type": "event",
        "id": "EV1",
        "attributes": {
            "timestamp": int(T0.timestamp()),
            "event_properties": {
                "$event_id": 5123456789,
                "$value": "48.5",
                "Discount Codes": ["spring ", "SPRING"],
                "DiscountCode": "vip",
                "$extra": {
                    "currency": "CAD",
                    "email": "extra@example.com",
                    "discount_codes": [{"code": "bonus", "amount": "5.00"}, "plain", 7],
                    "shipping_address": {
                        "address1": "1 Rue",
                        "city": "Montréal",
                        "province_code": "QC",
                        "zip": "H2X 1Y4",
                        "country_code": "CA",
                    },
                },
            },
        },
        "relationships": {"profile": {"data": {"type": "profile", "id": "P9"}}},
    }
    order = order_from_event(resource, {"P9": None}, now=NOW)
    assert order.external_id == "5123456789"
    assert order.ordered_at == T0
    assert (order.total_minor, order.currency) == (4850, "CAD")
    assert order.email == "extra@example.com"
    assert order.address == OrderAddress("1 Rue", None, "Montréal", "QC", "H2X 1Y4", "CA")
    assert order.discount_codes == ("VIP", "SPRING", "BONUS", "PLAIN", "7")


def test_an_order_id_wins_over_event_ids_and_bad_customer_fields_are_dropped() -> None:
    resource = _raw_event(
        "EV2",
        {
            "OrderId": "A-1",
            "$event_id": "B-2",
            "$value": 3,
            "$currency_code": "usd",
            "ShippingAddress": {"Address1": "1 Main\x00", "Zip": {"x": 1}, "City": "Austin"},
            "BillingAddress": "not an object",
        },
    )
    order = order_from_event(resource, {"P1": "Jane\x00@example.com"}, now=NOW)
    assert (order.external_id, order.currency) == ("A-1", "USD")
    assert order.email is None
    assert order.address == OrderAddress(city="Austin")


# -- property: any JSON-ish event ---------------------------------------------------------

ADDRESS_KEYS = ("Address1", "Address2", "City", "Region", "RegionCode", "Zip", "Country")
PROPERTIES = st.fixed_dictionaries(
    {"$value": AMOUNTS, "$currency_code": CURRENCIES},
    optional={
        "OrderId": IDS,
        "$event_id": IDS,
        "Currency": CURRENCIES,
        "DiscountCode": TEXTS,
        "Discount Codes": maybe(st.lists(TEXTS, max_size=3)),
        "ShippingAddress": maybe(
            st.fixed_dictionaries({}, optional=dict.fromkeys(ADDRESS_KEYS, TEXTS))
        ),
        "$extra": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "currency": CURRENCIES,
                    "email": TEXTS,
                    "discount_codes": maybe(
                        st.lists(maybe(st.fixed_dictionaries({"code": TEXTS})))
                    ),
                    "shipping_address": maybe(
                        st.fixed_dictionaries(
                            {}, optional=dict.fromkeys(("address1", "zip", "country_code"), TEXTS)
                        )
                    ),
                },
            )
        ),
    },
)
PROFILE_LINK = st.fixed_dictionaries(
    {
        "profile": maybe(
            st.fixed_dictionaries(
                {"data": maybe(st.fixed_dictionaries({"id": maybe(st.just("P1"))}))}
            )
        )
    }
)
EVENTS = mostly(
    st.fixed_dictionaries(
        {
            "type": st.just("event"),
            "id": IDS,
            "attributes": maybe(
                st.fixed_dictionaries(
                    {"datetime": TIMES, "event_properties": maybe(PROPERTIES)},
                    optional={"timestamp": TIMES},
                )
            ),
        },
        optional={"relationships": maybe(PROFILE_LINK)},
    ),
    JSONISH,
)


@pytest.fixture
def organization(db_url: str) -> int:
    return make_organization(db_url)


@PROPERTY
@given(
    event=EVENTS,
    email=TEXTS,
    default_currency=st.one_of(st.none(), st.sampled_from(["USD", "JPY", "bad"])),
)
def test_any_event_is_rejected_or_stored_as_it_is(
    db_url: str, organization: int, event: Any, email: Any, default_currency: str | None
) -> None:
    try:
        order = order_from_event(event, {"P1": email}, default_currency=default_currency, now=NOW)
    except InvalidOrder as rejected:
        assert rejected.source == K.KLAVIYO
        json.dumps(str(rejected))
        event_("rejected")
        return
    event_("stored")
    assert_storable(db_url, organization, order)
