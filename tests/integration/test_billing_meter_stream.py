"""StripeMeter.record_usage_many: Stripe's v2 meter event stream through the official SDK,
against the Stripe sandbox (in process and over HTTP) and against Stripe's shapes with respx."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import respx

from mail_pipeline.integrations.billing import InvalidUsageEvents, StripeMeter, UsageEvent
from mail_pipeline.integrations.billing.sandbox import (
    METER_EVENTS,
    SANDBOX_API_KEY,
    SESSION_LIFETIME,
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
from mail_pipeline.integrations.sandbox.server import (
    SandboxHTTPServer,
    SandboxVendors,
    ServerConfig,
)
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.resources.billing import SandboxBilling

# stripe 16.1's HTTPXClient posts its body with httpx's deprecated ``data=<str>``.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

NOW = 1_800_000_000.0
DAY = 24 * 3600
SESSION_PATH = "/v2/billing/meter_event_session"
STREAM_PATH = "/v2/billing/meter_event_stream"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Recording(httpx.BaseTransport):
    """Hands requests to the sandbox and keeps them with the status answered."""

    def __init__(self, sandbox: StripeSandbox) -> None:
        self.sandbox = sandbox
        self.requests: list[httpx.Request] = []
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.sandbox.handle_request(request)
        self.statuses.append(response.status_code)
        return response

    def calls(self, path: str) -> int:
        return sum(1 for request in self.requests if request.url.path == path)


@pytest.fixture
def store() -> SandboxStore:
    return SandboxStore(":memory:")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(store: SandboxStore, clock: Clock) -> StripeSandbox:
    return StripeSandbox(store, clock=clock)


@pytest.fixture
def recording(sandbox: StripeSandbox) -> Recording:
    return Recording(sandbox)


def make_meter(
    transport: httpx.BaseTransport, clock: Clock, *, attempts: int = 4, key: str = SANDBOX_API_KEY
) -> StripeMeter:
    return StripeMeter(
        key,
        transport=transport,
        clock=clock,
        sleep=clock.sleep,
        retry=RetryPolicy(max_attempts=attempts, base_delay=0.01),
    )


def usage(
    n: int, *, at: float = NOW - 60, customer: str = "cus_1", prefix: str = ""
) -> list[UsageEvent]:
    return [
        UsageEvent(
            customer_id=customer, identifier=f"{prefix}rcp_{i}:mailed", value=1, timestamp=int(at)
        )
        for i in range(n)
    ]


# -- against the sandbox ------------------------------------------------------------------------
def test_250_events_are_three_stream_calls_on_one_session(
    store: SandboxStore, recording: Recording, clock: Clock
) -> None:
    make_meter(recording, clock).record_usage_many(usage(250))

    assert recording.calls(SESSION_PATH) == 1 and recording.calls(STREAM_PATH) == 3
    bodies = [json.loads(r.content) for r in recording.requests if r.url.path == STREAM_PATH]
    assert [len(body["events"]) for body in bodies] == [100, 100, 50]
    assert {r.headers["authorization"] for r in recording.requests[1:]} != {
        f"Bearer {SANDBOX_API_KEY}"
    }
    events = StripeSandboxData(store).meter_events()
    assert len(events) == 250 and StripeSandboxData(store).total_usage("cus_1") == 250
    # stored exactly like a v1 meter event, so every reader of METER_EVENTS keeps working
    assert events[0] == {
        "object": "billing.meter_event",
        "created": int(NOW),
        "event_name": "postcards_mailed",
        "identifier": "rcp_0:mailed",
        "livemode": False,
        "payload": {"stripe_customer_id": "cus_1", "value": "1"},
        "timestamp": int(NOW) - 60,
    }


def test_the_same_events_sent_twice_are_recorded_once(
    store: SandboxStore, recording: Recording, clock: Clock
) -> None:
    meter = make_meter(recording, clock)
    meter.record_usage_many(usage(250))
    meter.record_usage_many(usage(250))
    # and a v1 call for one of them is "already recorded", not a second bill
    again = meter.record_usage(customer_id="cus_1", identifier="rcp_7:mailed", timestamp=int(NOW))

    assert store.count(METER_EVENTS) == 250 and not again.created
    assert recording.calls(SESSION_PATH) == 1 and recording.calls(STREAM_PATH) == 6


def test_an_identifier_repeated_with_the_same_facts_is_sent_once(
    store: SandboxStore, recording: Recording, clock: Clock
) -> None:
    events = usage(3)
    make_meter(recording, clock).record_usage_many([*events, events[0], events[2]])

    (body,) = [json.loads(r.content) for r in recording.requests if r.url.path == STREAM_PATH]
    assert [e["identifier"] for e in body["events"]] == [e.identifier for e in events]
    assert store.count(METER_EVENTS) == 3


def test_a_session_expired_mid_way_is_renewed_once(
    store: SandboxStore, sandbox: StripeSandbox, clock: Clock
) -> None:
    server_clock = Clock()
    sandbox.clock = server_clock  # Stripe's clock runs ahead of ours
    recording = Recording(sandbox)

    class ExpireAfterFirstChunk(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = recording.handle_request(request)
            if request.url.path == STREAM_PATH and recording.calls(STREAM_PATH) == 1:
                server_clock.now += SESSION_LIFETIME
            return response

    make_meter(ExpireAfterFirstChunk(), clock).record_usage_many(usage(250, at=NOW))

    assert recording.calls(SESSION_PATH) == 2
    answers = zip(recording.requests, recording.statuses, strict=True)
    assert [status for r, status in answers if r.url.path == STREAM_PATH] == [200, 401, 200, 200]
    assert store.count(METER_EVENTS) == 250


def test_a_session_is_renewed_before_it_expires(recording: Recording, clock: Clock) -> None:
    meter = make_meter(recording, clock)
    meter.record_usage_many(usage(1, at=NOW))
    clock.now += SESSION_LIFETIME - 30  # within the renewal margin
    recording.sandbox.clock = clock
    meter.record_usage_many(usage(1, at=clock.now))

    assert recording.calls(SESSION_PATH) == 2
    assert 401 not in recording.statuses


def test_a_session_refused_again_after_renewal_is_authentication_failed(
    store: SandboxStore, sandbox: StripeSandbox, clock: Clock
) -> None:
    server_clock = Clock()
    sandbox.clock = server_clock

    class EveryTokenExpires(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == STREAM_PATH:
                server_clock.now += SESSION_LIFETIME
            return sandbox.handle_request(request)

    with pytest.raises(AuthenticationFailed) as info:
        make_meter(EveryTokenExpires(), clock).record_usage_many(usage(1, at=NOW))
    assert info.value.code == "billing_meter_event_session_expired"
    assert not info.value.retryable and store.count(METER_EVENTS) == 0


def test_threads_share_one_session(store: SandboxStore, recording: Recording, clock: Clock) -> None:
    meter = make_meter(recording, clock)
    batches = [usage(40, customer=f"cus_{n}", prefix=f"{n}/") for n in range(6)]
    threads = [threading.Thread(target=meter.record_usage_many, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert recording.calls(SESSION_PATH) == 1 and recording.calls(STREAM_PATH) == 6
    assert store.count(METER_EVENTS) == 240


def test_a_rate_limit_that_never_lifts_is_retryable(store: SandboxStore, clock: Clock) -> None:
    sandbox = StripeSandbox(store, SandboxBehaviour(rate_limit=(1, 3600.0)), clock=clock)
    meter = make_meter(sandbox, clock, attempts=3)
    meter.stream.session_token()  # the one call the window allows

    with pytest.raises(RateLimited) as info:
        meter.record_usage_many(usage(5, at=NOW))
    assert info.value.retryable and info.value.code == "rate_limit"
    assert sandbox.request_count == 4 and len(clock.sleeps) == 2
    assert store.count(METER_EVENTS) == 0


def test_a_persistent_5xx_is_retryable(store: SandboxStore, clock: Clock) -> None:
    sandbox = StripeSandbox(store, SandboxBehaviour(failure_rate=1.0), clock=clock)

    with pytest.raises(VendorUnavailable) as info:
        make_meter(sandbox, clock, attempts=3).record_usage_many(usage(5, at=NOW))
    assert info.value.retryable and info.value.status_code == 503
    assert sandbox.request_count == 3


def test_a_bad_secret_key_fails_at_the_session(store: SandboxStore, clock: Clock) -> None:
    sandbox = StripeSandbox(store, clock=clock)

    with pytest.raises(AuthenticationFailed, match="Invalid API Key"):
        make_meter(sandbox, clock, key="sk_test_wrong_key_1234").record_usage_many(usage(1))
    assert sandbox.request_count == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"identifier": ""}, "identifier is missing"),
        ({"identifier": "x" * 101}, "101 characters"),
        ({"customer_id": "acct_1"}, "not a Stripe customer id"),
        ({"customer_id": ""}, "not a Stripe customer id"),
        ({"value": -1}, "whole number >= 0"),
        ({"value": 1.5}, "whole number >= 0"),
        ({"value": True}, "whole number >= 0"),
        ({"value": 10**15}, "more than 15 digits"),
        ({"timestamp": int(NOW) - 36 * DAY}, "more than 35 days ago"),
        ({"timestamp": int(NOW) + 6 * 60}, "more than 5 minutes in the future"),
        ({"timestamp": datetime(2027, 1, 1)}, "no timezone"),
        ({"timestamp": "2027-01-01"}, "aware datetime or epoch seconds"),
    ],
)
def test_a_malformed_event_is_refused_before_any_call(
    store: SandboxStore, recording: Recording, clock: Clock, change: dict[str, object], reason: str
) -> None:
    good = usage(3)
    bad = replace(good[1], **change)  # type: ignore[arg-type]

    with pytest.raises(InvalidUsageEvents) as info:
        make_meter(recording, clock).record_usage_many([good[0], bad, good[2]])

    assert recording.requests == [] and store.count(METER_EVENTS) == 0
    error = info.value
    assert isinstance(error, RequestRejected) and isinstance(error, ValueError)
    assert not error.retryable
    assert list(error.problems) == [bad.identifier] and reason in error.problems[bad.identifier]
    assert str(error).startswith("stripe: 1 of 3 meter events refused before sending")
    assert reason in str(error)


def test_an_identifier_repeated_with_other_facts_is_refused(
    recording: Recording, clock: Clock
) -> None:
    first = UsageEvent("cus_1", "rcp_1:mailed", 1, int(NOW))
    other = UsageEvent("cus_2", "rcp_1:mailed", 1, int(NOW))

    with pytest.raises(InvalidUsageEvents, match="given twice in this call"):
        make_meter(recording, clock).record_usage_many([first, other])
    assert recording.requests == []


def test_edges_of_the_timestamp_window_are_sent(
    store: SandboxStore, recording: Recording, clock: Clock
) -> None:
    make_meter(recording, clock).record_usage_many(
        [
            UsageEvent("cus_1", "old", 1, int(NOW) - 35 * DAY),
            UsageEvent("cus_1", "ahead", 1, datetime.fromtimestamp(NOW + 300, UTC)),
        ]
    )
    assert store.count(METER_EVENTS) == 2


def test_no_events_is_no_call(recording: Recording, clock: Clock) -> None:
    make_meter(recording, clock).record_usage_many([])
    assert recording.requests == []


# -- the sandbox's own answers ------------------------------------------------------------------
def stream_post(sandbox: StripeSandbox, body: object, token: str | None = None) -> httpx.Response:
    with httpx.Client(base_url="https://meter-events.stripe.com", transport=sandbox) as http:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return http.post(STREAM_PATH, json=body, headers=headers)


def new_session(sandbox: StripeSandbox) -> dict[str, object]:
    with httpx.Client(base_url="https://api.stripe.com", transport=sandbox) as http:
        response = http.post(SESSION_PATH, headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"})
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


def stream_event(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_name": "postcards_mailed",
        "identifier": "rcp_1:mailed",
        "payload": {"stripe_customer_id": "cus_1", "value": "1"},
        "timestamp": "2027-01-15T08:00:00.000Z",
    }
    event.update(changes)
    return event


def test_a_session_is_stripes_object_valid_15_minutes(sandbox: StripeSandbox) -> None:
    session = new_session(sandbox)

    assert session["object"] == "v2.billing.meter_event_session"
    assert session["livemode"] is False
    created = datetime.fromisoformat(str(session["created"]))
    expires = datetime.fromisoformat(str(session["expires_at"]))
    assert created.timestamp() == NOW and (expires - created).total_seconds() == 15 * 60


def test_the_stream_takes_only_session_tokens(sandbox: StripeSandbox, clock: Clock) -> None:
    token = str(new_session(sandbox)["authentication_token"])
    untimed = {k: v for k, v in stream_event().items() if k != "timestamp"}  # Stripe: now
    body = {"events": [untimed]}

    assert stream_post(sandbox, body, token).json() == {}
    secret = stream_post(sandbox, body, SANDBOX_API_KEY)
    missing = stream_post(sandbox, body)
    clock.now += 15 * 60
    expired = stream_post(sandbox, body, token)

    assert secret.status_code == missing.status_code == expired.status_code == 401
    assert expired.json()["error"]["code"] == "billing_meter_event_session_expired"
    assert expired.json()["error"]["type"] == "invalid_request_error"
    assert "code" not in secret.json()["error"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"events": []}, "events"),
        ({}, "events"),
        ({"events": [stream_event(identifier=f"e{i}") for i in range(101)]}, "events"),
        ({"events": [stream_event(customer="cus_1")]}, "events[0].customer"),
        ({"events": [stream_event(), {"payload": {"value": "1"}}]}, "events[1].event_name"),
        ({"events": [stream_event(timestamp="yesterday")]}, "events[0].timestamp"),
        ({"events": [stream_event(identifier="x" * 101)]}, "events[0].identifier"),
        ({"events": [stream_event(payload={"value": 1})]}, "events[0]"),
    ],
)
def test_a_malformed_stream_request_is_a_400_and_records_nothing(
    store: SandboxStore, sandbox: StripeSandbox, body: object, param: str
) -> None:
    token = str(new_session(sandbox)["authentication_token"])
    response = stream_post(sandbox, body, token)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert store.count(METER_EVENTS) == 0


def test_events_stripe_would_report_later_are_errors_not_usage(
    store: SandboxStore, sandbox: StripeSandbox
) -> None:
    token = str(new_session(sandbox)["authentication_token"])
    response = stream_post(
        sandbox,
        {
            "events": [
                stream_event(identifier="ok"),
                stream_event(identifier="old", timestamp="2026-01-01T00:00:00Z"),
                stream_event(identifier="half", payload={"stripe_customer_id": "c", "value": "½"}),
                stream_event(identifier="nobody", payload={"value": "1"}),
            ]
        },
        token,
    )

    assert response.status_code == 200 and response.json() == {}
    data = StripeSandboxData(store)
    assert [e["identifier"] for e in data.meter_events()] == ["ok"]
    assert [(e["identifier"], e["code"]) for e in data.meter_event_errors()] == [
        ("old", "timestamp_too_far_in_past"),
        ("half", "meter_event_invalid_value"),
        ("nobody", "meter_event_no_customer_defined"),
    ]


def test_a_429_has_stripes_shape(store: SandboxStore, clock: Clock) -> None:
    sandbox = StripeSandbox(store, SandboxBehaviour(rate_limit=(1, 1.0)), clock=clock)
    token = str(new_session(sandbox)["authentication_token"])
    limited = stream_post(sandbox, {"events": [stream_event()]}, token)

    assert limited.status_code == 429
    assert limited.headers["stripe-should-retry"] == "true"
    error = limited.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "rate_limit"
    assert "rate limit" in error["message"]


# -- over HTTP, as the resource builds it from MAIL_PIPELINE_SANDBOX_URL -------------------------
@pytest.fixture
def sandbox_server(tmp_path: Path) -> Iterator[SandboxHTTPServer]:
    server = SandboxHTTPServer(("127.0.0.1", 0))
    server.vendors = SandboxVendors(
        ServerConfig(
            store_path=str(tmp_path / "sandbox.sqlite"),
            image_dir=str(tmp_path / "images"),
            public_url=server.url,
        )
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_sandbox_resource_streams_through_the_server(
    sandbox_server: SandboxHTTPServer, tmp_path: Path
) -> None:
    assert sandbox_server.vendors is not None
    billing = SandboxBilling(
        sandbox_path=str(tmp_path / "sandbox.sqlite"), sandbox_url=sandbox_server.url
    )
    now = int(datetime.now(UTC).timestamp())
    events = [UsageEvent("cus_server", f"srv-{i}", 1, now) for i in range(150)]

    meter = billing.meter()
    meter.record_usage_many(events)
    meter.record_usage_many(events)

    assert sandbox_server.vendors.store.count(METER_EVENTS) == 150


# -- against Stripe's documented shapes (respx) -------------------------------------------------
SESSION_URL = "https://api.stripe.com/v2/billing/meter_event_session"
STREAM_URL = "https://meter-events.stripe.com/v2/billing/meter_event_stream"


def session_body(
    token: str = "tok_1", expires_at: str = "2027-01-15T08:15:00.000Z"
) -> dict[str, object]:
    return {
        "id": "mes_1",
        "object": "v2.billing.meter_event_session",
        "authentication_token": token,
        "created": "2027-01-15T08:00:00.000Z",
        "expires_at": expires_at,
        "livemode": False,
    }


def stripe_error(status: int, message: str, code: str | None = None) -> httpx.Response:
    error: dict[str, object] = {"type": "invalid_request_error", "message": message}
    if code:
        error["code"] = code
    return httpx.Response(status, json={"error": error})


@pytest.fixture
def live_clock() -> Clock:
    return Clock(datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp())


@pytest.fixture
def meter(live_clock: Clock) -> StripeMeter:
    return StripeMeter(
        "sk_test_123",
        clock=live_clock,
        sleep=live_clock.sleep,
        retry=RetryPolicy(max_attempts=3, base_delay=0.01),
    )


def live_usage(clock: Clock, n: int = 2) -> list[UsageEvent]:
    return usage(n, at=clock.now - 60, customer="cus_123")


@respx.mock
def test_stream_requests_are_stripes_shape(meter: StripeMeter, live_clock: Clock) -> None:
    session = respx.post(SESSION_URL).mock(return_value=httpx.Response(200, json=session_body()))
    stream = respx.post(STREAM_URL).mock(return_value=httpx.Response(200, json={}))

    meter.record_usage_many(live_usage(live_clock))

    assert session.calls.last.request.headers["authorization"] == "Bearer sk_test_123"
    request = stream.calls.last.request
    assert request.headers["authorization"] == "Bearer tok_1"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "events": [
            {
                "event_name": "postcards_mailed",
                "identifier": f"rcp_{i}:mailed",
                "payload": {"stripe_customer_id": "cus_123", "value": "1"},
                "timestamp": "2027-01-15T07:59:00.000Z",
            }
            for i in range(2)
        ]
    }


@respx.mock
def test_a_stream_5xx_is_retried_then_succeeds(meter: StripeMeter, live_clock: Clock) -> None:
    respx.post(SESSION_URL).mock(return_value=httpx.Response(200, json=session_body()))
    stream = respx.post(STREAM_URL).mock(
        side_effect=[
            httpx.Response(500, json={"error": {"type": "api_error", "message": "oops"}}),
            httpx.ConnectError("reset"),
            httpx.Response(200, json={}),
        ]
    )

    meter.record_usage_many(live_usage(live_clock))

    assert stream.call_count == 3 and len(live_clock.sleeps) == 2
    assert len({call.request.content for call in stream.calls}) == 1


@respx.mock
def test_a_stream_rate_limit_that_persists_is_rate_limited(
    meter: StripeMeter, live_clock: Clock
) -> None:
    respx.post(SESSION_URL).mock(return_value=httpx.Response(200, json=session_body()))
    stream = respx.post(STREAM_URL).mock(
        return_value=stripe_error(429, "Request rate limit exceeded.", "rate_limit")
    )

    with pytest.raises(RateLimited) as info:
        meter.record_usage_many(live_usage(live_clock))
    assert info.value.retryable and stream.call_count == 3


@respx.mock
def test_a_stream_timeout_that_persists_is_vendor_unavailable(
    meter: StripeMeter, live_clock: Clock
) -> None:
    respx.post(SESSION_URL).mock(return_value=httpx.Response(200, json=session_body()))
    respx.post(STREAM_URL).mock(side_effect=httpx.ReadTimeout("slow"))

    with pytest.raises(VendorUnavailable) as info:
        meter.record_usage_many(live_usage(live_clock))
    assert info.value.retryable


@respx.mock
def test_a_stream_400_is_rejected_without_retry(meter: StripeMeter, live_clock: Clock) -> None:
    respx.post(SESSION_URL).mock(return_value=httpx.Response(200, json=session_body()))
    stream = respx.post(STREAM_URL).mock(
        return_value=stripe_error(400, "Missing required param: events.", "parameter_missing")
    )

    with pytest.raises(RequestRejected) as info:
        meter.record_usage_many(live_usage(live_clock))
    assert not info.value.retryable and stream.call_count == 1 and live_clock.sleeps == []
    assert "Missing required param: events." in str(info.value)


@respx.mock
def test_an_expired_session_401_renews_the_session_once(
    meter: StripeMeter, live_clock: Clock
) -> None:
    session = respx.post(SESSION_URL).mock(
        side_effect=[
            httpx.Response(200, json=session_body("tok_1")),
            httpx.Response(200, json=session_body("tok_2")),
        ]
    )
    stream = respx.post(STREAM_URL).mock(
        side_effect=[
            stripe_error(401, "Session expired.", "billing_meter_event_session_expired"),
            httpx.Response(200, json={}),
        ]
    )

    meter.record_usage_many(live_usage(live_clock))

    assert session.call_count == 2
    assert [c.request.headers["authorization"] for c in stream.calls] == [
        "Bearer tok_1",
        "Bearer tok_2",
    ]


@respx.mock
def test_a_session_5xx_is_retried(meter: StripeMeter, live_clock: Clock) -> None:
    session = respx.post(SESSION_URL).mock(
        side_effect=[
            httpx.Response(503, json={"error": {"type": "api_error", "message": "busy"}}),
            httpx.Response(200, json=session_body()),
        ]
    )
    respx.post(STREAM_URL).mock(return_value=httpx.Response(200, json={}))

    meter.record_usage_many(live_usage(live_clock))

    assert session.call_count == 2


@respx.mock
def test_meter_events_base_moves_the_stream_host(live_clock: Clock) -> None:
    respx.post("http://localhost:12111/v2/billing/meter_event_session").mock(
        return_value=httpx.Response(200, json=session_body())
    )
    stream = respx.post("http://localhost:12112/v2/billing/meter_event_stream").mock(
        return_value=httpx.Response(200, json={})
    )
    meter = StripeMeter(
        "sk_test_123",
        api_base="http://localhost:12111",
        meter_events_base="http://localhost:12112",
        clock=live_clock,
    )

    meter.record_usage_many(live_usage(live_clock))

    assert stream.called
