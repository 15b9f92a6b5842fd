"""Ometria orders: the client against its sandbox (paging by update time, windows, statuses,
auth, 4 requests per second), against Ometria's error shapes (respx), and the order mapper
against any JSON-ish order (hypothesis)."""

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
    VendorUnavailable,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.orders.base import OrderPage
from mail_pipeline.integrations.orders.mapping import MalformedPage
from mail_pipeline.integrations.orders.ometria import OmetriaOrderClient, order_from_ometria
from mail_pipeline.integrations.orders.sandbox import OmetriaSandbox, OrderSandboxData
from mail_pipeline.integrations.orders.sandbox.data import SandboxOrder
from mail_pipeline.integrations.orders.sandbox.ometria import SANDBOX_API_KEY
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
ACCOUNT = "organization-3"
URL = "https://api.ometria.com/v2/orders"
T0 = datetime(2026, 11, 19, 12, 0, tzinfo=UTC)


class RecordingSandbox(OmetriaSandbox):
    """The sandbox, remembering the status of every answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statuses: list[int] = []
        self.offsets: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        params = request.url.params
        self.offsets.append((params.get("timestamp_update_from", ""), params.get("offset", "")))
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
    key: str = SANDBOX_API_KEY,
    sandbox_limit: tuple[int, float] | None = None,
    client_limit: tuple[int, float] | None = None,
    page_size: int = 100,
) -> tuple[OmetriaOrderClient, RecordingSandbox]:
    sandbox = RecordingSandbox(
        store, account=ACCOUNT, rate_limit=sandbox_limit, sleep=clock.sleep, clock=clock
    )
    client = OmetriaOrderClient(
        key,
        transport=sandbox,
        page_size=page_size,
        retry=RetryPolicy(max_attempts=4, base_delay=0.5),
        rate_limit=client_limit,
        sleep=clock.sleep,
        clock=clock.utc,
        monotonic=clock,
    )
    return client, sandbox


def purchase(number: int, at: datetime, **fields: Any) -> SandboxOrder:
    values: dict[str, Any] = {
        "total": Decimal("25.00"),
        "currency": "GBP",
        "email": f"buyer{number}@example.co.uk",
        "address": OrderAddress("12 High Street", None, "Bristol", None, "BS1 4DJ", "GB"),
    }
    values.update(fields)
    return SandboxOrder(number=str(number), ordered_at=at, **values)


def read_all(
    client: OmetriaOrderClient, since: datetime, until: datetime | None = None
) -> list[OrderPage]:
    return list(client.order_pages(since, until))


def ids(pages: list[OrderPage]) -> list[str]:
    return [order.external_id for page in pages for order in page.orders]


# -- against the sandbox ------------------------------------------------------------------


def test_pages_by_last_change_and_the_window(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    for n in range(5):
        data.place(K.OMETRIA, ACCOUNT, purchase(100 + n, T0 + timedelta(minutes=n)))
    client, _ = sandbox_client(store, clock, page_size=2)

    pages = read_all(client, T0)
    assert [len(p.orders) for p in pages] == [2, 2, 1]
    assert ids(pages) == ["100", "101", "102", "103", "104"]
    window = read_all(client, T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))
    assert ids(window) == ["101", "102"]


def test_orders_changed_at_the_same_second_page_without_loss_or_repeats(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    for n in range(5):
        data.place(K.OMETRIA, ACCOUNT, purchase(200 + n, T0))
    client, sandbox = sandbox_client(store, clock, page_size=2)

    assert ids(read_all(client, T0)) == ["200", "201", "202", "203", "204"]
    start = T0.isoformat()
    assert sandbox.offsets == [(start, "0"), (start, "2"), (start, "4")]


def test_an_order_changed_while_paging_is_read_again_never_skipped(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    """With a growing offset the change would push order 302 out of the page it should be
    in; paging from the last update time reads 300 again (its new version) instead."""
    for n in range(5):
        data.place(K.OMETRIA, ACCOUNT, purchase(300 + n, T0 + timedelta(seconds=n)))
    client, _ = sandbox_client(store, clock, page_size=2)
    pages = client.order_pages(T0)

    first = next(pages)
    data.place(
        K.OMETRIA,
        ACCOUNT,
        purchase(300, T0, cancelled_at=T0 + timedelta(minutes=10)),
    )
    rest = list(pages)

    assert ids([first]) == ["300", "301"]
    assert ids(rest) == ["302", "303", "304", "300"]
    assert [o for page in rest for o in page.orders][-1].cancelled


def test_every_field_and_status_is_mapped(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    data.place(K.OMETRIA, ACCOUNT, purchase(400, T0, discount_codes=("hearth15", "EXTRA")))
    data.place(
        K.OMETRIA,
        ACCOUNT,
        purchase(401, T0 + timedelta(seconds=1), cancelled_at=T0 + timedelta(hours=1)),
    )
    data.place(
        K.OMETRIA,
        ACCOUNT,
        purchase(
            402,
            T0 + timedelta(seconds=2),
            email=None,
            refunded=Decimal("25.00"),
            refunded_at=T0 + timedelta(hours=2),
        ),
    )
    data.put_ometria_order(
        ACCOUNT,
        {
            "id": 403,
            "timestamp": "2026-11-19T12:00:03",
            "timestamp_update": "2026-11-19T13:00:00Z",
            "grand_total": 0,
            "currency": "gbp",
            "status": "complete",
            "is_valid": False,
            "billing_address": {
                "line_1": "1 Mill Road",
                "postcode": "LS1 4AP",
                "country_code": "GB",
            },
        },
        at=T0 + timedelta(hours=3),
        key="403",
    )

    [page] = read_all(sandbox_client(store, clock)[0], T0)

    by_id = {order.external_id: order for order in page.orders}
    assert by_id["400"] == SourceOrder(
        source=K.OMETRIA,
        external_id="400",
        ordered_at=T0,
        total_minor=2500,
        currency="GBP",
        email="buyer400@example.co.uk",
        address=OrderAddress("12 High Street", None, "Bristol", None, "BS1 4DJ", "GB"),
        discount_codes=("HEARTH15", "EXTRA"),
        updated_at=T0,
    )
    assert by_id["401"].cancelled and by_id["401"].updated_at == T0 + timedelta(hours=1)
    assert by_id["402"].refunded_minor == 2500 and by_id["402"].email is None
    unvalidated = by_id["403"]
    assert (unvalidated.cancelled, unvalidated.total_minor, unvalidated.currency) == (
        True,
        0,
        "GBP",
    )
    assert unvalidated.ordered_at == datetime(2026, 11, 19, 12, 0, 3, tzinfo=UTC)
    assert unvalidated.address == OrderAddress("1 Mill Road", postal_code="LS1 4AP", country="GB")


def test_orders_that_cannot_be_mapped_are_reported_and_the_others_kept(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    data.place(K.OMETRIA, ACCOUNT, purchase(500, T0))
    good = {"timestamp": T0.isoformat(), "currency": "GBP", "grand_total": 5}
    for n, doc in enumerate(
        [
            {**good, "id": "501", "grand_total": None},
            {**good, "id": "502", "currency": "XXX"},
            {**good, "id": "503", "grand_total": -1},
            {**good, "id": "\ud800"},
            "not an order",
        ],
        start=1,
    ):
        data.put_ometria_order(ACCOUNT, doc, at=T0 + timedelta(seconds=n), key=f"raw-{n}")

    [page] = read_all(sandbox_client(store, clock)[0], T0)

    assert ids([page]) == ["500"]
    assert sorted(str(r) for r in page.rejected) == [
        "ometria an order without an id: id holds a character the database cannot store",
        "ometria an order without an id: the order is text",
        "ometria order 501: grand_total is missing",
        "ometria order 502: currency is refused: XXX has no minor unit; it is not a currency "
        "of orders",
        "ometria order 503: grand_total is refused: the amount is negative",
    ]


def test_a_bad_key_is_an_authentication_failure(store: SandboxStore, clock: Clock) -> None:
    client, sandbox = sandbox_client(store, clock, key="someone-elses-key")
    with pytest.raises(AuthenticationFailed, match="HTTP 403"):
        read_all(client, T0)
    assert sandbox.statuses == [403]


def test_past_four_requests_a_second_the_sandbox_answers_429_and_the_client_backs_off(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    for n in range(10):
        data.place(K.OMETRIA, ACCOUNT, purchase(600 + n, T0 + timedelta(seconds=n)))
    client, sandbox = sandbox_client(store, clock, page_size=1, sandbox_limit=(4, 1.0))

    assert len(ids(read_all(client, T0))) == 10
    assert 429 in sandbox.statuses


def test_the_client_keeps_under_four_requests_a_second_by_itself(
    store: SandboxStore, clock: Clock, data: OrderSandboxData
) -> None:
    for n in range(10):
        data.place(K.OMETRIA, ACCOUNT, purchase(700 + n, T0 + timedelta(seconds=n)))
    client, sandbox = sandbox_client(
        store, clock, page_size=1, sandbox_limit=(4, 1.0), client_limit=(4, 1.0)
    )

    assert len(ids(read_all(client, T0))) == 10
    assert set(sandbox.statuses) == {200}


# -- Ometria's error shapes (respx) ---------------------------------------------------------

ORDER = {"id": "900", "timestamp": T0.isoformat(), "grand_total": 10, "currency": "GBP"}


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def respx_client(sleeps: list[float]) -> OmetriaOrderClient:
    return OmetriaOrderClient(
        "live-key",
        sleep=sleeps.append,
        retry=RetryPolicy(max_attempts=3, base_delay=0.01),
        rate_limit=None,
        clock=lambda: NOW,
    )


@respx.mock
def test_the_request_carries_the_key_and_the_window(respx_client: OmetriaOrderClient) -> None:
    route = respx.get(URL).mock(return_value=httpx.Response(200, json=[ORDER]))
    assert ids(
        read_all(
            respx_client, T0 + timedelta(microseconds=1), T0 + timedelta(hours=1, milliseconds=1)
        )
    ) == ["900"]
    request = route.calls.last.request
    assert request.headers["x-ometria-auth"] == "live-key"
    assert dict(request.url.params) == {
        "orderby": "timestamp_update",
        "timestamp_update_from": "2026-11-19T12:00:00+00:00",
        "timestamp_update_to": "2026-11-19T13:00:01+00:00",
        "limit": "100",
        "offset": "0",
    }


@respx.mock
@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (403, {"status": 403, "message": "Forbidden"}, AuthenticationFailed, "Forbidden"),
        (401, {"error": "Unauthorized"}, AuthenticationFailed, "Unauthorized"),
        (404, {"error": {"message": "no such endpoint"}}, NotFound, "no such endpoint"),
    ],
)
def test_errors_are_typed_with_ometrias_message(
    respx_client: OmetriaOrderClient, status: int, body: Any, kind: type[Exception], message: str
) -> None:
    respx.get(URL).mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(kind, match=message):
        read_all(respx_client, T0)


@respx.mock
def test_429_without_retry_after_backs_off_then_succeeds(
    respx_client: OmetriaOrderClient, sleeps: list[float]
) -> None:
    respx.get(URL).mock(
        side_effect=[
            httpx.Response(429, text="Too Many Requests"),
            httpx.Response(200, json=[ORDER]),
        ]
    )
    assert ids(read_all(respx_client, T0)) == ["900"]
    assert len(sleeps) == 1 and 0.005 <= sleeps[0] <= 0.01


@respx.mock
def test_429_with_retry_after_is_honoured_and_a_lasting_one_is_rate_limited(
    respx_client: OmetriaOrderClient, sleeps: list[float]
) -> None:
    respx.get(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "2"}))
    with pytest.raises(RateLimited):
        read_all(respx_client, T0)
    assert sleeps == [2.0, 2.0]


@respx.mock
def test_a_5xx_storm_is_vendor_unavailable(respx_client: OmetriaOrderClient) -> None:
    respx.get(URL).mock(return_value=httpx.Response(502, text="<html>Bad gateway</html>"))
    with pytest.raises(VendorUnavailable, match="Bad gateway"):
        read_all(respx_client, T0)


@respx.mock
@pytest.mark.parametrize(
    ("body", "match"),
    [(b"<html>", "not JSON"), (b'{"orders": []}', "an orders page is an object")],
)
def test_malformed_pages_are_typed(
    respx_client: OmetriaOrderClient, body: bytes, match: str
) -> None:
    respx.get(URL).mock(return_value=httpx.Response(200, content=body))
    with pytest.raises(MalformedPage, match=match):
        read_all(respx_client, T0)


# -- property: any JSON-ish order ---------------------------------------------------------

ADDRESS = maybe(
    st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            ("line_1", "line_2", "city", "state", "postcode", "country_code"), TEXTS
        ),
    )
)
ORDERS = mostly(
    st.fixed_dictionaries(
        {"id": IDS, "timestamp": TIMES, "grand_total": AMOUNTS, "currency": CURRENCIES},
        optional={
            "timestamp_update": TIMES,
            "status": mostly(
                st.sampled_from(["complete", "cancelled", "Refunded", "pending"]), TEXTS
            ),
            "is_valid": mostly(st.booleans(), JSONISH),
            "coupon_code": TEXTS,
            "customer": maybe(st.fixed_dictionaries({}, optional={"email": TEXTS})),
            "shipping_address": ADDRESS,
            "billing_address": ADDRESS,
        },
    ),
    JSONISH,
)


@pytest.fixture
def organization(db_url: str) -> int:
    return make_organization(db_url)


@PROPERTY
@given(item=ORDERS)
def test_any_order_is_rejected_or_stored_as_it_is(
    db_url: str, organization: int, item: Any
) -> None:
    try:
        order = order_from_ometria(item, now=NOW)
    except InvalidOrder as rejected:
        assert rejected.source == K.OMETRIA
        json.dumps(str(rejected))
        event_("rejected")
        return
    event_("stored")
    assert_storable(db_url, organization, order)
