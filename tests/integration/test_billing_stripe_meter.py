"""StripeMeter (official SDK over httpx) against Stripe's documented shapes, with respx."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from mail_pipeline.integrations.billing import StripeMeter
from mail_pipeline.integrations.billing.stripe_meter import idempotency_key
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import RetryPolicy

# stripe 16.1's HTTPXClient posts its form with httpx's deprecated ``data=<str>``.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

URL = "https://api.stripe.com/v1/billing/meter_events"
STAMP = 1_790_000_000


def meter_event(identifier: str = "rcp_42:mailed", value: str = "1") -> dict[str, object]:
    return {
        "object": "billing.meter_event",
        "created": STAMP + 1,
        "event_name": "postcards_mailed",
        "identifier": identifier,
        "livemode": False,
        "payload": {"stripe_customer_id": "cus_123", "value": value},
        "timestamp": STAMP,
    }


def stripe_error(
    status: int,
    message: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    error: dict[str, object] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return httpx.Response(status, json={"error": error}, headers=headers)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def meter(sleeps: list[float]) -> StripeMeter:
    return StripeMeter(
        "sk_test_123", sleep=sleeps.append, retry=RetryPolicy(max_attempts=3, base_delay=0.01)
    )


@respx.mock
def test_meter_event_is_a_form_post_with_identifier_payload_and_idempotency_key(
    meter: StripeMeter,
) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=meter_event(value="3")))

    result = meter.record_usage(
        customer_id="cus_123",
        identifier="rcp_42:mailed",
        value=3,
        timestamp=datetime.fromtimestamp(STAMP, UTC),
    )

    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["authorization"] == "Bearer sk_test_123"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["idempotency-key"] == idempotency_key(
        "postcards_mailed", "rcp_42:mailed", "cus_123", 3, STAMP
    )
    assert request.headers["idempotency-key"].startswith("meter-event-rcp_42:mailed-")
    assert parse_qs(request.content.decode()) == {
        "event_name": ["postcards_mailed"],
        "identifier": ["rcp_42:mailed"],
        "payload[stripe_customer_id]": ["cus_123"],
        "payload[value]": ["3"],
        "timestamp": [str(STAMP)],
    }
    assert result.created and result.value == 3 and result.timestamp == STAMP
    assert not result.livemode


@respx.mock
def test_5xx_and_connection_errors_are_retried_with_the_same_idempotency_key(
    meter: StripeMeter,
    sleeps: list[float],
) -> None:
    route = respx.post(URL).mock(
        side_effect=[
            stripe_error(500, "An unknown error occurred", kind="api_error"),
            httpx.ConnectError("connection reset"),
            httpx.Response(200, json=meter_event()),
        ]
    )

    result = meter.record_usage(customer_id="cus_123", identifier="rcp_42:mailed", timestamp=STAMP)

    assert result.created and route.call_count == 3 and len(sleeps) == 2
    keys = {call.request.headers["idempotency-key"] for call in route.calls}
    bodies = {call.request.content for call in route.calls}
    assert len(keys) == 1 and len(bodies) == 1


@respx.mock
def test_a_duplicate_identifier_means_already_recorded_and_is_not_retried(
    meter: StripeMeter,
    sleeps: list[float],
) -> None:
    route = respx.post(URL).mock(
        return_value=stripe_error(
            400,
            "An event already exists with identifier rcp_42:mailed.",
            param="identifier",
            headers={"stripe-should-retry": "false"},
        )
    )

    result = meter.record_usage(customer_id="cus_123", identifier="rcp_42:mailed", timestamp=STAMP)

    assert not result.created and result.identifier == "rcp_42:mailed"
    assert route.call_count == 1 and sleeps == []


@respx.mock
def test_other_invalid_requests_are_rejected_readably(meter: StripeMeter) -> None:
    respx.post(URL).mock(
        return_value=stripe_error(
            400, "Missing required param: event_name.", code="parameter_missing", param="event_name"
        )
    )

    with pytest.raises(RequestRejected) as info:
        meter.record_usage(customer_id="cus_123", identifier="x", timestamp=STAMP)
    assert type(info.value) is RequestRejected
    assert str(info.value) == (
        "stripe: Missing required param: event_name. "
        "(param: event_name) (HTTP 400, parameter_missing)"
    )


@respx.mock
def test_a_bad_key_is_authentication_failed(meter: StripeMeter) -> None:
    respx.post(URL).mock(return_value=stripe_error(401, "Invalid API Key provided: sk_test_***123"))

    with pytest.raises(AuthenticationFailed, match="Invalid API Key") as info:
        meter.record_usage(customer_id="cus_123", identifier="x", timestamp=STAMP)
    assert info.value.status_code == 401 and not info.value.retryable


@respx.mock
def test_a_rate_limit_that_persists_is_rate_limited(
    meter: StripeMeter,
    sleeps: list[float],
) -> None:
    route = respx.post(URL).mock(
        return_value=stripe_error(429, "Request rate limit exceeded.", code="rate_limit")
    )

    with pytest.raises(RateLimited) as info:
        meter.record_usage(customer_id="cus_123", identifier="x", timestamp=STAMP)
    assert info.value.retryable and route.call_count == 3 and len(sleeps) == 2


@respx.mock
def test_a_network_failure_that_persists_is_vendor_unavailable(meter: StripeMeter) -> None:
    respx.post(URL).mock(side_effect=httpx.ReadTimeout("slow"))

    with pytest.raises(VendorUnavailable, match=r"Network error|Unexpected error"):
        meter.record_usage(customer_id="cus_123", identifier="x", timestamp=STAMP)


@respx.mock
def test_api_base_moves_the_calls_to_another_host() -> None:
    route = respx.post("http://localhost:12111/v1/billing/meter_events").mock(
        return_value=httpx.Response(200, json=meter_event())
    )
    meter = StripeMeter("sk_test_123", api_base="http://localhost:12111")

    meter.record_usage(customer_id="cus_123", identifier="rcp_42:mailed", timestamp=STAMP)

    assert route.called


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"value": 1.5}, "whole number"),
        ({"value": -1}, "whole number"),
        ({"value": True}, "whole number"),
        ({"identifier": ""}, "identifier"),
        ({"identifier": "x" * 101}, "identifier"),
        ({"customer_id": ""}, "customer"),
        ({"timestamp": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_arguments_stripe_would_refuse_are_caught_before_sending(
    meter: StripeMeter,
    kwargs: dict[str, object],
    message: str,
) -> None:
    call: dict[str, object] = {"customer_id": "cus_1", "identifier": "id-1", "value": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        meter.record_usage(**call)  # type: ignore[arg-type]
