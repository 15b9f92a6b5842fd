"""The real StripeMeter (official SDK) against the Stripe sandbox transport."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from mail_pipeline.integrations.billing import StripeMeter
from mail_pipeline.integrations.billing.sandbox import (
    SANDBOX_API_KEY,
    StripeSandbox,
    StripeSandboxData,
)
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour

NOW = 1_800_000_000.0
DAY = 24 * 3600
AUTH = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def store() -> SandboxStore:
    return SandboxStore(":memory:")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(store: SandboxStore, clock: Clock) -> StripeSandbox:
    return StripeSandbox(store, clock=clock)


def make_meter(
    transport: httpx.BaseTransport,
    key: str = SANDBOX_API_KEY,
    clock: Clock | None = None,
    attempts: int = 4,
) -> StripeMeter:
    return StripeMeter(
        key,
        transport=transport,
        sleep=clock.sleep if clock else lambda s: None,
        retry=RetryPolicy(max_attempts=attempts, base_delay=0.01),
    )


def post(
    sandbox: StripeSandbox, form: dict[str, str], headers: dict[str, str] | None = None
) -> httpx.Response:
    with httpx.Client(base_url="https://api.stripe.com", transport=sandbox) as http:
        return http.post("/v1/billing/meter_events", data=form, headers={**AUTH, **(headers or {})})


def valid_form(**changes: str) -> dict[str, str]:
    form = {
        "event_name": "postcards_mailed",
        "identifier": "rcp_1:mailed",
        "payload[stripe_customer_id]": "cus_1",
        "payload[value]": "1",
        "timestamp": str(int(NOW)),
    }
    form.update(changes)
    return form


def test_a_meter_event_is_recorded_and_answered_like_stripe(
    store: SandboxStore,
    sandbox: StripeSandbox,
) -> None:
    result = make_meter(sandbox).record_usage(
        customer_id="cus_1", identifier="rcp_1:mailed", value=2, timestamp=int(NOW) - 60
    )

    assert result.created and result.timestamp == int(NOW) - 60
    (event,) = StripeSandboxData(store).meter_events()
    assert event == {
        "object": "billing.meter_event",
        "created": int(NOW),
        "event_name": "postcards_mailed",
        "identifier": "rcp_1:mailed",
        "livemode": False,
        "payload": {"stripe_customer_id": "cus_1", "value": "2"},
        "timestamp": int(NOW) - 60,
    }
    assert StripeSandboxData(store).total_usage("cus_1") == 2


def test_a_duplicate_identifier_is_one_recorded_event_and_success_for_the_client(
    store: SandboxStore,
    sandbox: StripeSandbox,
) -> None:
    first = make_meter(sandbox).record_usage(
        customer_id="cus_1", identifier="rcp_1:mailed", timestamp=int(NOW) - 120
    )
    # another process, later, with another timestamp: not an idempotent replay
    again = make_meter(sandbox).record_usage(
        customer_id="cus_1", identifier="rcp_1:mailed", timestamp=int(NOW)
    )

    assert first.created and not again.created
    assert len(StripeSandboxData(store).meter_events()) == 1
    raw = post(sandbox, valid_form())
    assert raw.status_code == 400
    assert raw.headers["stripe-should-retry"] == "false"
    assert raw.json() == {
        "error": {
            "type": "invalid_request_error",
            "param": "identifier",
            "message": "An event already exists with identifier rcp_1:mailed.",
        }
    }


def test_an_identifier_is_unique_for_24_hours_only(
    store: SandboxStore,
    sandbox: StripeSandbox,
    clock: Clock,
) -> None:
    meter = make_meter(sandbox)
    assert meter.record_usage(customer_id="cus_1", identifier="id", timestamp=int(NOW)).created
    clock.now += DAY + 1
    assert meter.record_usage(
        customer_id="cus_1", identifier="id", timestamp=int(clock.now)
    ).created
    assert len(StripeSandboxData(store).meter_events()) == 2


def test_a_lost_response_is_retried_with_the_same_key_and_bills_once(
    store: SandboxStore,
    clock: Clock,
) -> None:
    losing = StripeSandbox(store, SandboxBehaviour(lost_response_rate=1.0), clock=clock)
    healthy = StripeSandbox(store, clock=clock)
    seen: list[httpx.Request] = []

    class LoseFirst(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return (losing if len(seen) == 1 else healthy).handle_request(request)

    result = make_meter(LoseFirst()).record_usage(
        customer_id="cus_1", identifier="rcp_9", timestamp=int(NOW)
    )

    assert result.created  # the idempotent replay of the first, processed request
    assert len(seen) == 2
    assert seen[0].headers["idempotency-key"] == seen[1].headers["idempotency-key"]
    assert len(StripeSandboxData(store).meter_events()) == 1


def test_idempotency_key_replays_and_refuses_other_parameters(sandbox: StripeSandbox) -> None:
    first = post(sandbox, valid_form(), {"Idempotency-Key": "k1"})
    replay = post(sandbox, valid_form(), {"Idempotency-Key": "k1"})
    other = post(sandbox, valid_form(**{"payload[value]": "5"}), {"Idempotency-Key": "k1"})

    assert first.status_code == replay.status_code == 200
    assert replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "idempotency_error"


def test_a_bad_key_is_authentication_failed(store: SandboxStore, sandbox: StripeSandbox) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        make_meter(sandbox, key="sk_test_wrong_key_1234").record_usage(
            customer_id="cus_1", identifier="x", timestamp=int(NOW)
        )
    assert str(info.value) == (
        "stripe: Invalid API Key provided: sk_test_**********1234 (HTTP 401)"
    )
    assert StripeSandboxData(store).meter_events() == []
    missing = httpx.Client(transport=sandbox).post(
        "https://api.stripe.com/v1/billing/meter_events", data=valid_form()
    )
    assert missing.status_code == 401
    assert "did not provide an API key" in missing.json()["error"]["message"]


@pytest.mark.parametrize("offset", [-36 * DAY, 6 * 60])
def test_a_timestamp_outside_the_window_is_rejected_readably(
    store: SandboxStore,
    sandbox: StripeSandbox,
    offset: int,
) -> None:
    with pytest.raises(RequestRejected) as info:
        make_meter(sandbox).record_usage(
            customer_id="cus_1", identifier="x", timestamp=int(NOW) + offset
        )
    message = str(info.value)
    assert "within the past 35 days and no more than 5 minutes in the future" in message
    assert "(param: timestamp)" in message and "HTTP 400" in message
    assert StripeSandboxData(store).meter_events() == []


def test_edges_of_the_timestamp_window_are_accepted(sandbox: StripeSandbox) -> None:
    meter = make_meter(sandbox)
    assert meter.record_usage(
        customer_id="c", identifier="a", timestamp=int(NOW) - 35 * DAY
    ).created
    assert meter.record_usage(customer_id="c", identifier="b", timestamp=int(NOW) + 300).created


@pytest.mark.parametrize(
    ("form", "code", "param", "message"),
    [
        (valid_form(**{"payload[value]": "1.5"}), None, "payload[value]", "whole number"),
        (valid_form(**{"payload[value]": "-2"}), None, "payload[value]", "whole number"),
        (valid_form(**{"payload[value]": "1" * 16}), None, "payload[value]", "at most 15 digits"),
        (
            {k: v for k, v in valid_form().items() if k != "event_name"},
            "parameter_missing",
            "event_name",
            "Missing required param: event_name.",
        ),
        (
            {k: v for k, v in valid_form().items() if not k.startswith("payload")},
            "parameter_missing",
            "payload",
            "Missing required param: payload.",
        ),
        (
            {k: v for k, v in valid_form().items() if k != "payload[value]"},
            "parameter_missing",
            "payload[value]",
            "missing the required key 'value'",
        ),
        (valid_form(timestamp="soon"), "parameter_invalid_integer", "timestamp", "Invalid integer"),
        (valid_form(customer="cus_1"), "parameter_unknown", "customer", "unknown parameter"),
    ],
)
def test_invalid_meter_events_get_stripes_error_body(
    sandbox: StripeSandbox,
    form: dict[str, str],
    code: str | None,
    param: str,
    message: str,
) -> None:
    response = post(sandbox, form)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error.get("code") == code and error["param"] == param
    assert message in error["message"]


def test_429_in_stripes_shape_then_success_after_backoff(
    store: SandboxStore,
    clock: Clock,
) -> None:
    sandbox = StripeSandbox(store, SandboxBehaviour(rate_limit=(1, 1.0)), clock=clock)
    limited = post(sandbox, valid_form(identifier="warm-up"))
    throttled = post(sandbox, valid_form(identifier="other"))
    assert limited.status_code == 200 and throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "rate_limit"
    assert throttled.json()["error"]["type"] == "invalid_request_error"

    result = make_meter(sandbox, clock=clock, attempts=20).record_usage(
        customer_id="cus_1", identifier="rcp_2", timestamp=int(NOW)
    )

    assert result.created and clock.sleeps  # backed off until the window moved on
    assert [e["identifier"] for e in StripeSandboxData(store).meter_events()] == [
        "warm-up",
        "rcp_2",
    ]


def test_a_rate_limit_that_never_lifts_is_rate_limited(store: SandboxStore) -> None:
    sandbox = StripeSandbox(store, SandboxBehaviour(rate_limit=(1, 3600.0)))
    post(sandbox, valid_form(timestamp=str(int(time.time()))))

    with pytest.raises(RateLimited):
        make_meter(sandbox, attempts=2).record_usage(customer_id="c", identifier="y")


def test_5xx_that_persists_is_vendor_unavailable(store: SandboxStore) -> None:
    sandbox = StripeSandbox(store, SandboxBehaviour(failure_rate=1.0))

    with pytest.raises(VendorUnavailable) as info:
        make_meter(sandbox, attempts=3).record_usage(customer_id="c", identifier="y")
    assert info.value.status_code == 503 and sandbox.request_count == 3
    assert json.loads(post(sandbox, valid_form()).content)["error"]["type"] == "api_error"
