"""The sandbox order sources answer like the vendors (status codes, bodies, headers, limits,
injected failures), keep orders as versions revealed in time, and the order-sources
resources build the right client for each integration with the right credential."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.orders import OrderAddress
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.klaviyo.sandbox import SANDBOX_API_KEY
from mail_pipeline.integrations.orders.klaviyo import KlaviyoOrderClient
from mail_pipeline.integrations.orders.ometria import OmetriaOrderClient
from mail_pipeline.integrations.orders.sandbox import (
    KlaviyoOrdersSandbox,
    OmetriaSandbox,
    OrderSandboxData,
    SandboxOrder,
    ShopifySandbox,
    sandbox_account,
    sandbox_order_client,
)
from mail_pipeline.integrations.orders.sandbox.book import OrderBook
from mail_pipeline.integrations.orders.sandbox.klaviyo import KlaviyoReadLimits
from mail_pipeline.integrations.orders.sandbox.ometria import SANDBOX_API_KEY as OMETRIA_KEY
from mail_pipeline.integrations.orders.sandbox.shopify import SANDBOX_ACCESS_TOKEN
from mail_pipeline.integrations.orders.shopify import ORDERS_QUERY, ShopifyOrderClient
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.resources.orders import LiveOrderSources, SandboxOrderSources
from tests.integration.test_orders_klaviyo import Clock
from tests.order_payloads import NOW

K = IntegrationKind
T0 = datetime(2026, 11, 19, 12, 0, tzinfo=UTC)
KLAVIYO_HEADERS = {"Authorization": f"Klaviyo-API-Key {SANDBOX_API_KEY}", "revision": "2026-07-15"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> SandboxStore:
    return SandboxStore(":memory:")


@pytest.fixture
def data(store: SandboxStore, clock: Clock) -> OrderSandboxData:
    return OrderSandboxData(store, clock=clock)


def purchase(number: int, at: datetime = T0, **fields: Any) -> SandboxOrder:
    return SandboxOrder(
        number=str(number), ordered_at=at, total=Decimal("10.00"), currency="USD", **fields
    )


# -- the order book ---------------------------------------------------------------------------


def test_the_book_serves_each_orders_latest_version_whose_time_has_come(
    store: SandboxStore,
) -> None:
    book = OrderBook(store, "shopify")
    assert book.put("shop", "A", 100.0, {"v": 1})
    assert not book.put("shop", "A", 100.0, {"v": "ignored"}), "a version is written once"
    book.put("shop", "A", 200.0, {"v": 2})
    book.put("shop", "B", 150.0, {"v": 1})

    def served(now: float, **window: Any) -> list[tuple[str, Any]]:
        return [(v.key, v.doc["v"]) for v in book.page("shop", now=now, **window)]

    assert served(99) == []
    assert served(160) == [("A", 1), ("B", 1)]
    assert served(300) == [("B", 1), ("A", 2)], "A moved to its change's time"
    assert served(300, since=160) == [("A", 2)]
    assert served(300, until=160) == [("B", 1)], "A's old version is not served any more"
    assert served(300, after=(150.0, "B")) == [("A", 2)]
    assert book.current("shop", "A", 150) == {"v": 1}
    assert book.keys("shop") == ["A", "B"] and book.keys("other") == []


def test_placing_an_order_twice_adds_nothing(store: SandboxStore, data: OrderSandboxData) -> None:
    order = purchase(1, refunded=Decimal("4.00"), refunded_at=T0 + timedelta(days=1))
    for kind, account in ((K.SHOPIFY, "shop"), (K.OMETRIA, "org"), (K.KLAVIYO, "org")):
        assert data.place(kind, account, order)
        assert not data.place(kind, account, order)
        assert len(data.order_numbers(kind, account)) == 1
    assert len(data.klaviyo_metrics("org")) == 1


# -- Klaviyo ---------------------------------------------------------------------------------


def klaviyo(store: SandboxStore, clock: Clock, **options: Any) -> httpx.Client:
    sandbox = KlaviyoOrdersSandbox(store, account="org", clock=clock, sleep=clock.sleep, **options)
    return httpx.Client(base_url="https://a.klaviyo.com", transport=sandbox)


def test_klaviyo_events_need_the_key_and_the_revision(store: SandboxStore, clock: Clock) -> None:
    with klaviyo(store, clock) as http:
        no_key = http.get("/api/events", headers={"revision": "2026-07-15"})
        no_revision = http.get(
            "/api/events", headers={"Authorization": KLAVIYO_HEADERS["Authorization"]}
        )
    assert no_key.status_code == 401
    assert no_key.json()["errors"][0]["code"] == "not_authenticated"
    assert no_revision.status_code == 400
    assert no_revision.json()["errors"][0]["source"] == {"parameter": "revision"}


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"filter": "equals(profile_id,'x')"}, "filter"),
        ({"filter": "greater-than(datetime,yesterday)"}, "filter"),
        ({"sort": "-datetime"}, "sort"),
        ({"page[size]": "1001"}, "page[size]"),
        ({"include": "campaign"}, "include"),
        ({"fields[event]": "name"}, "fields[event]"),
        ({"page[cursor]": "%%%"}, "page[cursor]"),
    ],
)
def test_klaviyo_refuses_what_it_does_not_support_naming_the_parameter(
    store: SandboxStore, clock: Clock, params: dict[str, str], parameter: str
) -> None:
    with klaviyo(store, clock) as http:
        answer = http.get("/api/events", params=params, headers=KLAVIYO_HEADERS)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["source"] == {"parameter": parameter}


def test_klaviyo_events_page_with_included_profiles_and_sparse_fields(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    data.place(K.KLAVIYO, "org", purchase(1, email="a@example.com"))
    data.place(K.KLAVIYO, "org", purchase(2, T0 + timedelta(seconds=1), email="a@example.com"))
    data.place(K.KLAVIYO, "org", purchase(3, T0 + timedelta(seconds=2)))
    metric = data.klaviyo_metric("org")
    with klaviyo(store, clock) as http:
        first = http.get(
            "/api/events",
            params={
                "filter": f'equals(metric_id,"{metric}"),greater-than(datetime,{T0.isoformat()})',
                "include": "profile",
                "fields[profile]": "email",
                "fields[event]": "datetime",
                "page[size]": "1",
            },
            headers=KLAVIYO_HEADERS,
        ).json()
        second = http.get(first["links"]["next"], headers=KLAVIYO_HEADERS).json()
        metrics = http.get(
            "/api/metrics", params={"fields[metric]": "name"}, headers=KLAVIYO_HEADERS
        ).json()
    assert [e["attributes"] for e in first["data"]] == [
        {"datetime": (T0 + timedelta(seconds=1)).isoformat()}
    ]
    assert [p["attributes"] for p in first["included"]] == [{"email": "a@example.com"}]
    assert len(second["data"]) == 1 and second["links"]["next"] is None
    assert second["included"][0]["attributes"] == {"email": None}
    assert metrics["data"] == [
        {
            "type": "metric",
            "id": metric,
            "attributes": {"name": "Placed Order"},
            "links": metrics["data"][0]["links"],
        }
    ]


def test_klaviyo_past_its_burst_limit_answers_429_with_retry_after_only(
    store: SandboxStore, clock: Clock
) -> None:
    with klaviyo(store, clock, read_limits=KlaviyoReadLimits(get_events=(2, 100))) as http:
        answers = [http.get("/api/events", headers=KLAVIYO_HEADERS) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "RateLimit-Limit" in answers[0].headers
    assert answers[2].headers["Retry-After"] == "1"
    assert "RateLimit-Limit" not in answers[2].headers


# -- Ometria -------------------------------------------------------------------------------


def ometria(store: SandboxStore, clock: Clock, **options: Any) -> httpx.Client:
    sandbox = OmetriaSandbox(store, account="org", clock=clock, sleep=clock.sleep, **options)
    return httpx.Client(base_url="https://api.ometria.com", transport=sandbox)


def test_ometria_refuses_a_bad_key_with_403_and_throttles_without_retry_after(
    store: SandboxStore, clock: Clock
) -> None:
    with ometria(store, clock) as http:
        refused = http.get("/v2/orders", headers={"X-Ometria-Auth": "nope"})
        answers = [
            http.get("/v2/orders", headers={"X-Ometria-Auth": OMETRIA_KEY}) for _ in range(5)
        ]
    assert refused.status_code == 403 and refused.json()["status"] == 403
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
    assert "retry-after" not in answers[-1].headers
    with ometria(store, clock, rate_limit=None) as http:
        headers = {"X-Ometria-Auth": OMETRIA_KEY}
        bad = [
            http.get("/v2/orders", params=params, headers=headers).status_code
            for params in ({"limit": "0"}, {"orderby": "id"}, {"timestamp_update_from": "soon"})
        ]
    assert bad == [400, 400, 400]


# -- Shopify -------------------------------------------------------------------------------


def shopify_post(
    store: SandboxStore, clock: Clock, url: str, body: Any, **headers: str
) -> httpx.Response:
    sandbox = ShopifySandbox(store, clock=clock, sleep=clock.sleep)
    with httpx.Client(transport=sandbox) as http:
        return http.post(
            url,
            json=body,
            headers={"X-Shopify-Access-Token": SANDBOX_ACCESS_TOKEN, **headers},
        )


ORDERS_BODY = {"query": ORDERS_QUERY, "variables": {"first": 10, "after": None, "query": None}}


def test_shopify_routes_by_shop_host_version_and_token(store: SandboxStore, clock: Clock) -> None:
    good = "https://shop-a.myshopify.com/admin/api/2026-07/graphql.json"
    answer = shopify_post(store, clock, good, ORDERS_BODY)
    assert answer.status_code == 200 and answer.headers["X-Shopify-API-Version"] == "2026-07"
    throttle = answer.json()["extensions"]["cost"]
    assert throttle["requestedQueryCost"] == 62 and throttle["actualQueryCost"] == 2
    assert throttle["throttleStatus"] == {
        "maximumAvailable": 1000.0,
        "currentlyAvailable": 998.0,
        "restoreRate": 50.0,
    }
    assert (
        shopify_post(
            store, clock, "https://evil.example/admin/api/2026-07/graphql.json", ORDERS_BODY
        ).status_code
        == 404
    )
    assert (
        shopify_post(
            store, clock, "https://shop-a.myshopify.com/admin/api/latest/graphql.json", ORDERS_BODY
        ).status_code
        == 404
    )
    refused = shopify_post(store, clock, good, ORDERS_BODY, **{"X-Shopify-Access-Token": "x"})
    assert refused.status_code == 401 and "Invalid API key" in refused.json()["errors"]


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        ({"first": 251}, "BAD_USER_INPUT"),
        ({"first": 10, "query": "created_at:>2026-01-01"}, "BAD_USER_INPUT"),
        ({"first": 10, "after": "not a cursor"}, "BAD_USER_INPUT"),
        ({"first": 200}, "MAX_COST_EXCEEDED"),
    ],
)
def test_shopify_graphql_errors_come_with_http_200(
    store: SandboxStore, clock: Clock, variables: dict[str, Any], code: str
) -> None:
    url = "https://shop-a.myshopify.com/admin/api/2026-07/graphql.json"
    answer = shopify_post(store, clock, url, {"query": ORDERS_QUERY, "variables": variables})
    assert answer.status_code == 200
    assert answer.json()["errors"][0]["extensions"]["code"] == code


# -- failures every sandbox injects ---------------------------------------------------------


@pytest.mark.parametrize("kind", list(IntegrationKind))
def test_injected_503s_reach_the_client_as_vendor_unavailable(
    store: SandboxStore, kind: IntegrationKind
) -> None:
    client = sandbox_order_client(
        kind, 1, {"shop": "shop-a"}, store, SandboxBehaviour(failure_rate=1.0, seed=1)
    )
    client_api = getattr(client, "api", None) or client.client.api  # type: ignore[attr-defined]
    client_api.sleep = lambda _s: None
    with pytest.raises(VendorUnavailable):
        list(client.order_pages(T0))


@pytest.mark.parametrize("kind", list(IntegrationKind))
def test_lost_responses_are_retried_and_reading_twice_changes_nothing(
    store: SandboxStore, data: OrderSandboxData, kind: IntegrationKind
) -> None:
    settings = {"shop": "shop-a"}
    for n in range(3):
        data.place(
            kind, sandbox_account(kind, 1, settings), purchase(n + 1, NOW - timedelta(hours=n + 1))
        )
    client = sandbox_order_client(
        kind, 1, settings, store, SandboxBehaviour(lost_response_rate=0.5, seed=3)
    )
    client_api = getattr(client, "api", None) or client.client.api  # type: ignore[attr-defined]
    client_api.sleep = lambda _s: None
    client_api.retry = client_api.retry.__class__(max_attempts=20, base_delay=0.0)
    orders = [o for page in client.order_pages(NOW - timedelta(days=1)) for o in page.orders]
    assert len(orders) == 3


# -- the resources ------------------------------------------------------------------------


def _integration(
    kind: IntegrationKind, org: int = 1, ref: str = "ORDERS_KEY", **settings: Any
) -> IntegrationRef:
    return IntegrationRef(org, kind, ref, settings)


def test_sandbox_order_sources_build_each_kind_over_the_shared_file(tmp_path: Path) -> None:
    path = str(tmp_path / "sandbox.sqlite")
    resource = SandboxOrderSources(sandbox_path=path)
    assert not (tmp_path / "sandbox.sqlite").exists(), "building a client touches nothing"
    data = OrderSandboxData(SandboxStore(path))
    data.place(K.OMETRIA, sandbox_account(K.OMETRIA, 4, {}), purchase(1, NOW - timedelta(hours=1)))
    data.place(K.SHOPIFY, "shop-b", purchase(2, NOW - timedelta(hours=1)))
    data.place(K.KLAVIYO, sandbox_account(K.KLAVIYO, 4, {}), purchase(3, NOW - timedelta(hours=1)))

    found = {}
    for kind, settings in ((K.OMETRIA, {}), (K.SHOPIFY, {"shop": "shop-b"}), (K.KLAVIYO, {})):
        client = resource.client_for(_integration(kind, org=4, **settings))
        found[kind] = [
            o.external_id for p in client.order_pages(NOW - timedelta(days=1)) for o in p.orders
        ]
        client.close()
    assert found == {K.OMETRIA: ["1"], K.SHOPIFY: ["gid://shopify/Order/2"], K.KLAVIYO: ["3"]}
    other = resource.client_for(_integration(K.OMETRIA, org=5))
    pages = other.order_pages(NOW - timedelta(days=1))
    assert [o for page in pages for o in page.orders] == [], "another organization's account"


def test_live_order_sources_use_the_integrations_own_organizations_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAIL_PIPELINE_ORG_7_OMETRIA_API_KEY", "key-of-seven")
    monkeypatch.setenv("MAIL_PIPELINE_ORG_7_SHOPIFY_TOKEN", "token-of-seven")
    monkeypatch.setenv("MAIL_PIPELINE_ORG_7_KLAVIYO_API_KEY", "pk_seven")
    sources = LiveOrderSources(secrets="environment", shopify_api_version="2026-04")

    ometria = sources.client_for(_integration(K.OMETRIA, 7, "OMETRIA_API_KEY"))
    assert isinstance(ometria, OmetriaOrderClient)
    assert ometria.api.headers["X-Ometria-Auth"] == "key-of-seven"
    shop = sources.client_for(_integration(K.SHOPIFY, 7, "SHOPIFY_TOKEN", shop="shop-c"))
    assert isinstance(shop, ShopifyOrderClient)
    assert shop.api.headers["X-Shopify-Access-Token"] == "token-of-seven"
    assert shop.api.base_url == "https://shop-c.myshopify.com"
    assert shop.path == "/admin/api/2026-04/graphql.json"
    pinned = sources.client_for(
        _integration(K.SHOPIFY, 7, "SHOPIFY_TOKEN", shop="shop-c", api_version="2025-10")
    )
    assert isinstance(pinned, ShopifyOrderClient)
    assert pinned.path == "/admin/api/2025-10/graphql.json", "the shop's own version wins"
    klaviyo_client = sources.client_for(
        _integration(K.KLAVIYO, 7, "KLAVIYO_API_KEY", placed_order_metric_id="AbC123")
    )
    assert isinstance(klaviyo_client, KlaviyoOrderClient)
    assert klaviyo_client.metric_id == "AbC123"
    assert klaviyo_client.client.api.headers["Authorization"] == "Klaviyo-API-Key pk_seven"

    with pytest.raises(AuthenticationFailed, match="'OMETRIA_API_KEY' of organization 8"):
        sources.client_for(_integration(K.OMETRIA, 8, "OMETRIA_API_KEY"))
    with pytest.raises(RequestRejected, match="shop setting"):
        sources.client_for(_integration(K.SHOPIFY, 7, "SHOPIFY_TOKEN"))


def test_order_addresses_survive_every_vendor_shape(
    store: SandboxStore, data: OrderSandboxData
) -> None:
    place = OrderAddress("1 Main St", "Apt 2", "Austin", "TX", "78701", "US")
    for kind in IntegrationKind:
        settings = {"shop": "shop-d"}
        data.place(
            kind,
            sandbox_account(kind, 9, settings),
            purchase(7, NOW - timedelta(hours=1), address=place, email=None),
        )
        client = sandbox_order_client(kind, 9, settings, store)
        [order] = [o for p in client.order_pages(NOW - timedelta(days=1)) for o in p.orders]
        assert (order.address, order.email, order.total_minor) == (place, None, 1000), kind


def test_the_sandbox_resource_hands_its_latency_and_failure_rate_to_the_sandboxes(
    tmp_path: Path,
) -> None:
    resource = SandboxOrderSources(
        sandbox_path=str(tmp_path / "s.sqlite"), latency_seconds=0.25, failure_rate=0.5
    )
    client = resource.client_for(_integration(K.OMETRIA))
    assert isinstance(client, OmetriaOrderClient)
    transport = client.api.transport
    assert isinstance(transport, OmetriaSandbox)
    assert (transport.behaviour.latency_seconds, transport.behaviour.failure_rate) == (0.25, 0.5)
