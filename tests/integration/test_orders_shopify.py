"""Shopify Admin GraphQL orders: the client against its sandbox (cursor pages, windows, the
cost bucket), against Shopify's error and throttling shapes (respx; every wait computed from
``throttleStatus`` and checked through an injected sleep), and the order mapper against any
JSON-ish node (hypothesis)."""

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
from mail_pipeline.integrations.orders.base import OrderPage
from mail_pipeline.integrations.orders.mapping import MalformedPage
from mail_pipeline.integrations.orders.sandbox import OrderSandboxData, ShopifySandbox
from mail_pipeline.integrations.orders.sandbox.data import SandboxOrder
from mail_pipeline.integrations.orders.sandbox.shopify import (
    INVALID_TOKEN,
    SANDBOX_ACCESS_TOKEN,
    ShopifyBucket,
)
from mail_pipeline.integrations.orders.shopify import (
    ShopifyOrderClient,
    order_from_node,
    search_query,
)
from mail_pipeline.integrations.sandbox.store import SandboxStore
from tests.integration.test_orders_klaviyo import Clock
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
SHOP = "juniper-trail"
URL = f"https://{SHOP}.myshopify.com/admin/api/2026-07/graphql.json"
T0 = datetime(2026, 11, 19, 12, 0, tzinfo=UTC)


class RecordingSandbox(ShopifySandbox):
    """The sandbox, remembering what it answered (THROTTLED or not)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        body = response.json()
        throttled = (
            any(
                e.get("extensions", {}).get("code") == "THROTTLED"
                for e in body.get("errors") or []
                if isinstance(e, dict)
            )
            if isinstance(body, dict)
            else False
        )
        self.answers.append("THROTTLED" if throttled else str(response.status_code))
        return response


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
    store: SandboxStore,
    clock: Clock,
    *,
    token: str = SANDBOX_ACCESS_TOKEN,
    bucket: ShopifyBucket | None = None,
    page_size: int = 100,
    shop: str = SHOP,
) -> tuple[ShopifyOrderClient, RecordingSandbox]:
    sandbox = RecordingSandbox(store, bucket=bucket, sleep=clock.sleep, clock=clock)
    client = ShopifyOrderClient(
        token,
        shop,
        transport=sandbox,
        page_size=page_size,
        retry=RetryPolicy(max_attempts=3, base_delay=0.01),
        sleep=clock.sleep,
        clock=clock,
        now=clock.utc,
    )
    return client, sandbox


def purchase(number: int, at: datetime, **fields: Any) -> SandboxOrder:
    values: dict[str, Any] = {
        "total": Decimal("64.00"),
        "currency": "USD",
        "email": f"hiker{number}@example.com",
        "address": OrderAddress("400 Alder St", "Unit 2", "Portland", "OR", "97204", "US"),
    }
    values.update(fields)
    return SandboxOrder(number=str(number), ordered_at=at, **values)


def read_all(
    client: ShopifyOrderClient, since: datetime, until: datetime | None = None
) -> list[OrderPage]:
    return list(client.order_pages(since, until))


def ids(pages: list[OrderPage]) -> list[str]:
    return [order.external_id.rsplit("/", 1)[-1] for page in pages for order in page.orders]


# -- against the sandbox ------------------------------------------------------------------


def test_cursor_pages_by_updated_at_and_the_window(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    for n in range(5):
        data.place(K.SHOPIFY, SHOP, purchase(5001 + n, T0 + timedelta(minutes=n)))
    data.place(K.SHOPIFY, "another-shop", purchase(9999, T0))
    client, _ = sandbox_client(store, clock, page_size=2)

    pages = read_all(client, T0)
    assert [len(p.orders) for p in pages] == [2, 2, 1]
    assert ids(pages) == ["5001", "5002", "5003", "5004", "5005"]
    assert ids(read_all(client, T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))) == [
        "5002",
        "5003",
    ]


def test_every_field_is_mapped_and_refunds_and_cancellations_come_back_as_updates(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    data.place(K.SHOPIFY, SHOP, purchase(6001, T0, discount_codes=("trail20",)))
    data.place(
        K.SHOPIFY,
        SHOP,
        purchase(
            6002,
            T0 + timedelta(minutes=1),
            email=None,
            refunded=Decimal("14.50"),
            refunded_at=T0 + timedelta(hours=5),
        ),
    )
    data.place(
        K.SHOPIFY,
        SHOP,
        purchase(
            6003, T0 + timedelta(minutes=2), total=Decimal(0), cancelled_at=T0 + timedelta(hours=6)
        ),
    )
    client, _ = sandbox_client(store, clock)

    before_refund = read_all(client, T0, T0 + timedelta(hours=1))
    assert ids(before_refund) == ["6001"], "6002 and 6003 changed later: they are read later"
    [page] = read_all(client, T0)

    first, refunded, cancelled = page.orders
    assert first == SourceOrder(
        source=K.SHOPIFY,
        external_id="gid://shopify/Order/6001",
        ordered_at=T0,
        total_minor=6400,
        currency="USD",
        email="hiker6001@example.com",
        address=OrderAddress("400 Alder St", "Unit 2", "Portland", "OR", "97204", "US"),
        discount_codes=("TRAIL20",),
        updated_at=T0,
    )
    assert (refunded.refunded_minor, refunded.email) == (1450, None)
    assert refunded.updated_at == T0 + timedelta(hours=5)
    assert (cancelled.cancelled, cancelled.total_minor) == (True, 0)


def test_nodes_that_cannot_be_mapped_are_reported_and_the_others_kept(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    data.place(K.SHOPIFY, SHOP, purchase(7001, T0))
    money = {"shopMoney": {"amount": "5.00", "currencyCode": "USD"}}
    good = {"processedAt": T0.isoformat(), "totalPriceSet": money}
    raw = [
        {**good, "id": "gid://shopify/Order/7002", "totalPriceSet": None},
        {
            **good,
            "id": "gid://shopify/Order/7003",
            "totalRefundedSet": {"shopMoney": {"amount": "1.00", "currencyCode": "EUR"}},
        },
        {**good, "id": "gid://shopify/Order/7004", "processedAt": "yesterday"},
        {**good, "id": None},
    ]
    for n, node in enumerate(raw, start=1):
        data.put_shopify_order(SHOP, node, at=T0 + timedelta(seconds=n), key=f"raw-{n}")

    [page] = read_all(sandbox_client(store, clock)[0], T0)

    assert ids([page]) == ["7001"]
    assert sorted(str(r) for r in page.rejected) == [
        "shopify an order without an id: id is missing",
        "shopify order gid://shopify/Order/7002: totalPriceSet is null, not an object",
        "shopify order gid://shopify/Order/7003: totalRefundedSet is in another currency "
        "than the total",
        "shopify order gid://shopify/Order/7004: processedAt is not an ISO-8601 time or "
        "epoch seconds",
    ]


def test_a_wrong_token_is_an_authentication_failure(store: SandboxStore, clock: Clock) -> None:
    client, _ = sandbox_client(store, clock, token="shpat_someone_else")
    with pytest.raises(AuthenticationFailed, match="Invalid API key or access token"):
        read_all(client, T0)


def test_a_shop_setting_that_is_not_a_myshopify_shop_is_refused() -> None:
    with pytest.raises(RequestRejected, match="shop setting"):
        ShopifyOrderClient.from_settings("token", {"shop": "evil.example.com/x"})
    with pytest.raises(RequestRejected, match="shop setting"):
        ShopifyOrderClient.from_settings("token", {})
    client = ShopifyOrderClient.from_settings(
        "token", {"shop": "https://Juniper-Trail.myshopify.com/", "api_version": "2025-10"}
    )
    assert (client.shop, client.path) == ("juniper-trail", "/admin/api/2025-10/graphql.json")


def test_the_client_waits_for_the_bucket_and_the_sandbox_never_throttles_it(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    """1,000 points refilled at 50 a second; 100 orders a page cost 602 points: after each
    full page the client waits for the bucket exactly as long as it needs."""
    for n in range(450):
        data.place(K.SHOPIFY, SHOP, purchase(10_000 + n, T0 + timedelta(seconds=n)))
    client, sandbox = sandbox_client(store, clock, bucket=ShopifyBucket(1000, 50))

    assert len(ids(read_all(client, T0))) == 450
    assert "THROTTLED" not in sandbox.answers
    # page 1: 1000 - 602 = 398 left -> wait (602 - 398) / 50; then each page leaves 0 -> 602 / 50
    assert clock.sleeps == pytest.approx([4.08, 12.04, 12.04, 12.04])


def test_without_waiting_the_sandbox_answers_throttled_and_the_client_recovers(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    for n in range(250):
        data.place(K.SHOPIFY, SHOP, purchase(20_000 + n, T0 + timedelta(seconds=n)))
    client, sandbox = sandbox_client(store, clock, bucket=ShopifyBucket(1000, 50))
    client.query_cost = None  # the client knows nothing; another app drained the bucket
    sandbox._buckets[SHOP] = (100.0, clock())

    assert len(ids(read_all(client, T0))) == 250
    assert sandbox.answers[0] == "THROTTLED"
    assert clock.sleeps[0] == pytest.approx((602 - 100) / 50)


def test_a_query_over_the_single_query_limit_is_refused(store: SandboxStore, clock: Clock) -> None:
    client, _ = sandbox_client(store, clock, bucket=ShopifyBucket(1000, 50), page_size=250)
    with pytest.raises(RequestRejected, match="MAX_COST_EXCEEDED"):
        read_all(client, T0)


# -- Shopify's shapes (respx) -----------------------------------------------------------------


def node(number: int) -> dict[str, Any]:
    return {
        "id": f"gid://shopify/Order/{number}",
        "processedAt": T0.isoformat(),
        "updatedAt": T0.isoformat(),
        "totalPriceSet": {"shopMoney": {"amount": "10.00", "currencyCode": "USD"}},
    }


def cost(
    requested: float, available: float, actual: float | None = 14, rate: float = 50
) -> dict[str, Any]:
    return {
        "cost": {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": 1000.0,
                "currentlyAvailable": available,
                "restoreRate": rate,
            },
        }
    }


def page(
    nodes: list[dict[str, Any]], more: bool, cursor: str | None, extensions: dict[str, Any]
) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "data": {
                "orders": {"pageInfo": {"hasNextPage": more, "endCursor": cursor}, "nodes": nodes}
            },
            "extensions": extensions,
        },
    )


def throttled(extensions: dict[str, Any]) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": extensions,
        },
    )


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def respx_client(sleeps: list[float]) -> ShopifyOrderClient:
    return ShopifyOrderClient(
        "shpat_live",
        SHOP,
        sleep=sleeps.append,
        clock=lambda: 1000.0,  # time stands still: every wait is exactly the formula's
        now=lambda: NOW,
        retry=RetryPolicy(max_attempts=3, base_delay=0.01),
    )


@respx.mock
def test_the_request_is_the_documented_graphql_call(respx_client: ShopifyOrderClient) -> None:
    route = respx.post(URL).mock(return_value=page([node(1)], False, "c1", cost(602, 988)))
    read_all(respx_client, T0, T0 + timedelta(hours=1, microseconds=5))

    request = route.calls.last.request
    body = json.loads(request.content)
    assert request.headers["x-shopify-access-token"] == "shpat_live"
    assert "sortKey: UPDATED_AT" in body["query"] and "pageInfo" in body["query"]
    assert body["variables"] == {
        "first": 100,
        "after": None,
        "query": "updated_at:>='2026-11-19T12:00:00Z' AND updated_at:<'2026-11-19T13:00:01Z'",
    }


@respx.mock
def test_waits_come_from_throttle_status_before_a_request_and_after_throttled(
    respx_client: ShopifyOrderClient, sleeps: list[float]
) -> None:
    route = respx.post(URL).mock(
        side_effect=[
            page([node(1)], True, "c1", cost(602, 400)),
            throttled(cost(602, 100, actual=None)),
            page([node(2)], False, "c2", cost(602, 990)),
        ]
    )
    assert ids(read_all(respx_client, T0)) == ["1", "2"]
    # (602 - 400) / 50 before the second request; (602 - 100) / 50 after THROTTLED
    assert sleeps == [pytest.approx(4.04), pytest.approx(10.04)]
    assert route.call_count == 3
    cursors = [json.loads(call.request.content)["variables"]["after"] for call in route.calls]
    assert cursors == [None, "c1", "c1"]


@respx.mock
def test_throttling_is_bounded_and_then_rate_limited(
    respx_client: ShopifyOrderClient, sleeps: list[float]
) -> None:
    respx.post(URL).mock(return_value=throttled(cost(602, 2, actual=None, rate=100)))
    with pytest.raises(RateLimited, match="still throttled") as limited:
        read_all(respx_client, T0)
    assert sleeps == [pytest.approx(6.0)] * 5
    assert limited.value.retry_after == pytest.approx(6.0)


@respx.mock
def test_a_throttled_answer_without_cost_backs_off_by_policy(
    respx_client: ShopifyOrderClient, sleeps: list[float]
) -> None:
    respx.post(URL).mock(
        side_effect=[
            httpx.Response(
                200,
                json={"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]},
            ),
            page([node(1)], False, None, {}),
        ]
    )
    assert ids(read_all(respx_client, T0)) == ["1"]
    assert len(sleeps) == 1 and 0.005 <= sleeps[0] <= 0.01


@respx.mock
@pytest.mark.parametrize(
    ("response", "kind", "message"),
    [
        (
            httpx.Response(
                401,
                json={"errors": INVALID_TOKEN},
            ),
            AuthenticationFailed,
            "Invalid API key",
        ),
        (
            httpx.Response(
                403,
                json={"errors": "This action requires merchant approval for read_orders scope."},
            ),
            AuthenticationFailed,
            "read_orders",
        ),
        (httpx.Response(404, json={"errors": "Not Found"}), NotFound, "Not Found"),
        (
            httpx.Response(402, json={"errors": "Unavailable Shop"}),
            RequestRejected,
            "Unavailable Shop",
        ),
        (
            httpx.Response(
                200,
                json={
                    "data": None,
                    "errors": [
                        {
                            "message": "Access denied for orders field.",
                            "extensions": {"code": "ACCESS_DENIED"},
                        }
                    ],
                },
            ),
            AuthenticationFailed,
            "Access denied",
        ),
        (
            httpx.Response(
                200,
                json={
                    "errors": [
                        {
                            "message": "Internal error. Something went wrong on our end.",
                            "extensions": {"code": "INTERNAL_SERVER_ERROR"},
                        }
                    ]
                },
            ),
            VendorUnavailable,
            "Internal error",
        ),
        (
            httpx.Response(
                200,
                json={"errors": [{"message": "Field 'orderz' doesn't exist on type 'QueryRoot'"}]},
            ),
            RequestRejected,
            "orderz",
        ),
    ],
)
def test_errors_are_typed(
    respx_client: ShopifyOrderClient, response: httpx.Response, kind: type[Exception], message: str
) -> None:
    respx.post(URL).mock(return_value=response)
    with pytest.raises(kind, match=message):
        read_all(respx_client, T0)


@respx.mock
def test_orders_that_came_with_a_refused_field_are_kept(respx_client: ShopifyOrderClient) -> None:
    protected = {**node(3), "email": None}
    respx.post(URL).mock(
        return_value=httpx.Response(
            200,
            json={
                "data": {
                    "orders": {
                        "pageInfo": {"hasNextPage": False, "endCursor": None},
                        "nodes": [protected],
                    }
                },
                "errors": [
                    {
                        "message": "This app is not approved to access the email field",
                        "extensions": {"code": "ACCESS_DENIED"},
                    }
                ],
            },
        )
    )
    [result] = read_all(respx_client, T0)
    assert [o.email for o in result.orders] == [None]


@respx.mock
def test_429_waits_out_retry_after(respx_client: ShopifyOrderClient, sleeps: list[float]) -> None:
    respx.post(URL).mock(
        side_effect=[
            httpx.Response(
                429, json={"errors": "Exceeded 2 calls per second"}, headers={"Retry-After": "2.0"}
            ),
            page([node(1)], False, None, cost(602, 900)),
        ]
    )
    assert ids(read_all(respx_client, T0)) == ["1"]
    assert sleeps == [2.0]


@respx.mock
def test_429_without_retry_after_backs_off_and_a_5xx_storm_is_unavailable(
    respx_client: ShopifyOrderClient, sleeps: list[float]
) -> None:
    respx.post(URL).mock(
        side_effect=[httpx.Response(429), page([node(1)], False, None, cost(602, 900))]
    )
    assert ids(read_all(respx_client, T0)) == ["1"]
    assert len(sleeps) == 1 and 0.005 <= sleeps[0] <= 0.01
    respx.post(URL).mock(return_value=httpx.Response(503, text="Service Unavailable"))
    with pytest.raises(VendorUnavailable):
        read_all(respx_client, T0)


@respx.mock
@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"<html>", "not JSON"),
        (b"[]", "an orders page is an array"),
        (b'{"data": {"orders": {"nodes": []}}}', "no pageInfo"),
        (b'{"data": {"orders": {"pageInfo": {"hasNextPage": false}}}}', "no nodes list"),
        (
            b'{"data": {"orders": {"pageInfo": {"hasNextPage": true, "endCursor": null},'
            b' "nodes": []}}}',
            "no new endCursor",
        ),
        (b'{"data": {"shop": {}}}', "no data.orders"),
    ],
)
def test_malformed_answers_are_typed(
    respx_client: ShopifyOrderClient, content: bytes, match: str
) -> None:
    respx.post(URL).mock(return_value=httpx.Response(200, content=content))
    with pytest.raises(MalformedPage, match=match):
        read_all(respx_client, T0)


def test_the_search_query_widens_to_whole_seconds() -> None:
    assert (
        search_query(T0 + timedelta(milliseconds=900), None)
        == "updated_at:>='2026-11-19T12:00:00Z'"
    )


# -- property: any JSON-ish node ------------------------------------------------------------

MONEY = maybe(
    st.fixed_dictionaries(
        {"shopMoney": maybe(st.fixed_dictionaries({"amount": AMOUNTS, "currencyCode": CURRENCIES}))}
    )
)
NODES = mostly(
    st.fixed_dictionaries(
        {"id": IDS, "processedAt": TIMES, "totalPriceSet": MONEY},
        optional={
            "createdAt": TIMES,
            "updatedAt": TIMES,
            "cancelledAt": mostly(st.none(), TIMES),
            "currencyCode": CURRENCIES,
            "email": TEXTS,
            "discountCodes": maybe(st.lists(TEXTS, max_size=3)),
            "totalRefundedSet": mostly(st.none(), MONEY),
            "shippingAddress": maybe(
                st.fixed_dictionaries(
                    {},
                    optional=dict.fromkeys(
                        ("address1", "address2", "city", "provinceCode", "zip", "countryCodeV2"),
                        TEXTS,
                    ),
                )
            ),
        },
    ),
    JSONISH,
)


@pytest.fixture
def organization(db_url: str) -> int:
    return make_organization(db_url)


@PROPERTY
@given(item=NODES)
def test_any_node_is_rejected_or_stored_as_it_is(db_url: str, organization: int, item: Any) -> None:
    try:
        order = order_from_node(item, now=NOW)
    except InvalidOrder as rejected:
        assert rejected.source == K.SHOPIFY
        json.dumps(str(rejected))
        event_("rejected")
        return
    event_("stored")
    assert_storable(db_url, organization, order)
