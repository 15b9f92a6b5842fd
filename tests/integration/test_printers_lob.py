"""LobPrinter: the exact requests it sends (respx), and its behaviour against LobSandbox."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any

import httpx
import pytest
import respx

from mail_pipeline.domain.addresses import Address
from mail_pipeline.domain.mailpieces import MailpieceStatus
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    NotFound,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import NO_RETRY, RetryPolicy
from mail_pipeline.integrations.printers.base import (
    MalformedWebhook,
    PostcardRequest,
    WebhookEnvelope,
)
from mail_pipeline.integrations.printers.lob import LobPrinter
from mail_pipeline.integrations.printers.sandbox import LobSandbox, emit_due_webhooks
from mail_pipeline.integrations.printers.sandbox.base import SandboxTimeline
from mail_pipeline.integrations.printers.webhooks import parse_envelope
from mail_pipeline.integrations.ratelimit import SlidingWindowLimiter
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour

LOB = "https://api.lob.com/v1"
KEY = "test_abc123"
FAST = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=0.0)


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class LoseFirstResponse(httpx.BaseTransport):
    """The vendor does the work, but the first answer never reaches the caller."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if self.lost == 0:
            self.lost += 1
            raise httpx.ReadTimeout("lost", request=request)
        return response


class FailFirst(httpx.BaseTransport):
    """The first request gets the vendor's 503 before it is processed."""

    def __init__(self, inner: LobSandbox) -> None:
        self.inner = inner
        self.failed = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.failed == 0:
            self.failed += 1
            return self.inner.error(503, "service temporarily unavailable")
        return self.inner.handle_request(request)


def us_address(line1: str = "210 King St", line2: str | None = None) -> Address:
    return Address.build(
        name="Jane Doe",
        line1=line1,
        line2=line2,
        city="San Francisco",
        postal_code="94107",
        country="US",
        region="CA",
    )


def request(key: str = "key-0001", recipient_id: int = 7, **kw: Any) -> PostcardRequest:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "recipient_id": recipient_id,
        "campaign_id": 3,
        "organization_id": 11,
        "to": us_address(),
        "front_url": "https://img.test/front.png",
        "back_url": "https://img.test/back.png",
    }
    fields.update(kw)
    return PostcardRequest(**fields)


def lob_postcard(piece_id: str = "psc_1", **extra: Any) -> dict[str, Any]:
    return {
        "id": piece_id,
        "object": "postcard",
        "expected_delivery_date": "2024-05-03",
        "metadata": {"idempotency_key": "key-0001", "recipient_id": "7"},
        "tracking_events": [],
        **extra,
    }


def sandbox_printer(
    store: SandboxStore | None = None,
    behaviour: SandboxBehaviour | None = None,
    clock: FakeClock | None = None,
    *,
    api_key: str = KEY,
    sandbox_key: str = KEY,
    retry: RetryPolicy = FAST,
    limiter: SlidingWindowLimiter | None = None,
    wrap: Any = None,
) -> tuple[LobPrinter, LobSandbox]:
    clock = clock or FakeClock()
    sandbox = LobSandbox(
        store or SandboxStore(), behaviour, api_key=sandbox_key, clock=clock.time, sleep=clock.sleep
    )
    printer = LobPrinter(
        api_key,
        transport=wrap(sandbox) if wrap else sandbox,
        retry=retry,
        limiter=limiter,
        rate_limit=None,
        sleep=clock.sleep,
        clock=clock.time,
    )
    return printer, sandbox


# -- request shapes (respx) ----------------------------------------------------------------
@respx.mock
def test_create_sends_lobs_documented_request() -> None:
    route = respx.post(f"{LOB}/postcards").mock(
        return_value=httpx.Response(200, json=lob_postcard())
    )
    piece = LobPrinter(KEY, rate_limit=None).create_postcard(request())

    sent = route.calls.last.request
    assert sent.method == "POST" and sent.url.path == "/v1/postcards"
    assert sent.headers["authorization"] == "Basic " + base64.b64encode(b"test_abc123:").decode()
    assert sent.headers["lob-version"] == "2020-02-11"
    assert sent.headers["idempotency-key"] == "key-0001"
    assert "idempotency_key" not in sent.url.params
    body = json.loads(sent.content)
    assert body == {
        "to": {
            "name": "Jane Doe",
            "address_line1": "210 King St",
            "address_city": "San Francisco",
            "address_state": "CA",
            "address_zip": "94107",
            "address_country": "US",
        },
        "front": "https://img.test/front.png",
        "back": "https://img.test/back.png",
        "size": "4x6",
        "use_type": "marketing",
        "mail_type": "usps_first_class",
        "metadata": {
            "recipient_id": "7",
            "campaign_id": "3",
            "organization_id": "11",
            "idempotency_key": "key-0001",
        },
    }
    assert piece.provider_piece_id == "psc_1" and piece.printer == "lob"
    assert piece.status is MailpieceStatus.CREATED
    assert str(piece.expected_delivery_date) == "2024-05-03"


@respx.mock
def test_standard_postage_and_sender_are_sent() -> None:
    route = respx.post(f"{LOB}/postcards").mock(
        return_value=httpx.Response(200, json=lob_postcard())
    )
    sender = Address.build(
        name="Brand Co",
        line1="1 Main St",
        city="Austin",
        postal_code="78701",
        country="US",
        region="TX",
    )
    LobPrinter(KEY, rate_limit=None).create_postcard(request(postage="standard", sender=sender))
    body = json.loads(route.calls.last.request.content)
    assert body["mail_type"] == "usps_standard"
    assert body["from"]["name"] == "Brand Co" and body["from"]["address_state"] == "TX"


@respx.mock
def test_find_lists_by_metadata_and_checks_the_recipient() -> None:
    route = respx.get(f"{LOB}/postcards").mock(
        return_value=httpx.Response(200, json={"data": [lob_postcard("psc_9")], "object": "list"})
    )
    printer = LobPrinter(KEY, rate_limit=None)
    found = printer.find_postcard("key-0001", 7)
    params = route.calls.last.request.url.params
    assert params["metadata[idempotency_key]"] == "key-0001" and params["limit"] == "10"
    assert found is not None and found.provider_piece_id == "psc_9"
    assert printer.find_postcard("key-0001", 8) is None


@respx.mock
def test_cancel_deletes_the_postcard() -> None:
    route = respx.delete(f"{LOB}/postcards/psc_5").mock(
        return_value=httpx.Response(200, json={"id": "psc_5", "deleted": True})
    )
    LobPrinter(KEY, rate_limit=None).cancel_postcard("psc_5")
    assert route.called


@respx.mock
@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (422, "ADDRESS_LENGTH_EXCEEDS_LIMIT", RequestRejected),
        (401, "UNAUTHORIZED", AuthenticationFailed),
        (404, "NOT_FOUND", NotFound),
    ],
)
def test_lob_error_bodies_become_typed_errors(status: int, code: str, kind: type) -> None:
    respx.post(f"{LOB}/postcards").mock(
        return_value=httpx.Response(
            status,
            json={"error": {"message": "the vendor says no", "status_code": status, "code": code}},
        )
    )
    with pytest.raises(kind) as caught:
        LobPrinter(KEY, rate_limit=None, retry=NO_RETRY).create_postcard(request())
    assert caught.value.code == code and caught.value.status_code == status
    assert "the vendor says no" in str(caught.value)


@respx.mock
def test_requests_lob_cannot_take_are_refused_before_sending() -> None:
    route = respx.post(f"{LOB}/postcards")
    with pytest.raises(RequestRejected, match="size 'A6'"):
        LobPrinter(KEY, rate_limit=None).create_postcard(request(size="A6"))
    with pytest.raises(RequestRejected, match="live API key"):
        LobPrinter("live_abc", rate_limit=None).create_postcard(request(test_mode=True))
    assert not route.called


# -- against the sandbox ---------------------------------------------------------------------
def test_replayed_key_returns_the_same_postcard_once() -> None:
    printer, sandbox = sandbox_printer()
    first = printer.create_postcard(request())
    again = printer.create_postcard(request())
    assert again.provider_piece_id == first.provider_piece_id
    assert sandbox.created_count() == 1
    assert sandbox.accepted_keys() == ["test:key-0001"]


def test_lost_response_then_retry_with_the_same_key_makes_one_postcard() -> None:
    store, clock = SandboxStore(), FakeClock()
    lossy, _ = sandbox_printer(
        store, SandboxBehaviour(lost_response_rate=1.0), clock, retry=NO_RETRY
    )
    with pytest.raises(VendorUnavailable, match="timed out"):
        lossy.create_postcard(request())
    printer, sandbox = sandbox_printer(store, clock=clock)
    assert sandbox.created_count() == 1  # Lob did the work although the caller saw a timeout
    piece = printer.create_postcard(request())
    assert sandbox.created_count() == 1
    [(only_id, _doc)] = list(sandbox.scan(sandbox.pieces))
    assert piece.provider_piece_id == only_id


def test_client_retry_after_a_lost_response_gets_the_original_postcard() -> None:
    holder: dict[str, LoseFirstResponse] = {}

    def wrap(sandbox: LobSandbox) -> LoseFirstResponse:
        holder["t"] = LoseFirstResponse(sandbox)
        return holder["t"]

    printer, sandbox = sandbox_printer(wrap=wrap)
    piece = printer.create_postcard(request())
    assert holder["t"].lost == 1
    assert sandbox.created_count() == 1
    assert sandbox.piece(piece.provider_piece_id) is not None


def test_5xx_is_retried_to_success() -> None:
    printer, sandbox = sandbox_printer(wrap=FailFirst)
    piece = printer.create_postcard(request())
    assert piece.provider_piece_id.startswith("psc_") and sandbox.created_count() == 1


def test_429_is_answered_like_lob_and_retried_to_success() -> None:
    clock = FakeClock()
    printer, sandbox = sandbox_printer(behaviour=SandboxBehaviour(rate_limit=(1, 5.0)), clock=clock)
    printer.create_postcard(request("key-a"))

    raw = httpx.Client(transport=sandbox, base_url=LOB, auth=(KEY, ""))
    answer = raw.post("/postcards", json={})
    assert answer.status_code == 429
    assert answer.headers["X-Rate-Limit-Limit"] == "1"
    assert answer.headers["X-Rate-Limit-Remaining"] == "0"
    assert float(answer.headers["X-Rate-Limit-Reset"]) > time.time()
    assert "wait 5 seconds" in answer.json()["error"]["message"]
    assert answer.json()["error"]["code"] == "rate_limit_exceeded"

    started = clock.now
    piece = printer.create_postcard(request("key-b"))
    assert piece.provider_piece_id and sandbox.created_count() == 2
    assert clock.now - started >= 4  # it waited for Lob's window instead of hammering


def test_wrong_key_is_authentication_failed() -> None:
    printer, _ = sandbox_printer(api_key="test_wrong")
    with pytest.raises(AuthenticationFailed, match="not valid") as caught:
        printer.create_postcard(request())
    assert caught.value.status_code == 401


def test_publishable_key_is_refused_with_403() -> None:
    printer, _ = sandbox_printer(api_key="test_pub_abc")
    with pytest.raises(AuthenticationFailed) as caught:
        printer.create_postcard(request())
    assert caught.value.status_code == 403 and caught.value.code == "PUBLISHABLE_KEY_NOT_ALLOWED"


def test_address_too_long_is_rejected_with_lobs_code() -> None:
    printer, sandbox = sandbox_printer()
    long_to = us_address(line1="1234 Extraordinarily Long Boulevard Name", line2="Apartment 99")
    with pytest.raises(RequestRejected, match="50 characters") as caught:
        printer.create_postcard(request(to=long_to))
    assert caught.value.code == "ADDRESS_LENGTH_EXCEEDS_LIMIT" and caught.value.status_code == 422
    assert sandbox.created_count() == 0


def test_sandbox_validates_like_lob() -> None:
    sandbox = LobSandbox(SandboxStore(), api_key=KEY)
    raw = httpx.Client(transport=sandbox, base_url=LOB, auth=(KEY, ""))
    missing_to = raw.post("/postcards", json={"front": "f", "back": "b", "use_type": "marketing"})
    assert missing_to.status_code == 422
    assert missing_to.json()["error"] == {
        "message": "to is required",
        "status_code": 422,
        "code": "INVALID",
    }
    both_keys = raw.post(
        "/postcards", params={"idempotency_key": "k"}, json={}, headers={"Idempotency-Key": "k"}
    )
    assert both_keys.status_code == 422
    bad_meta = request().to
    body = {
        "to": {
            "name": bad_meta.name,
            "address_line1": "1 A St",
            "address_city": "X",
            "address_state": "CA",
            "address_zip": "94107",
        },
        "front": "f",
        "back": "b",
        "use_type": "marketing",
        "metadata": {"k" * 40: "v"},
    }
    assert raw.post("/postcards", json=body).status_code == 422
    assert sandbox.created_count() == 0


def test_find_recovers_the_postcard_after_lobs_24h_key_window() -> None:
    clock = FakeClock()
    printer, sandbox = sandbox_printer(clock=clock)
    original = printer.create_postcard(request())
    clock.sleep(25 * 3600)
    found = printer.find_postcard("key-0001", 7)
    assert found is not None and found.provider_piece_id == original.provider_piece_id
    assert found.status is MailpieceStatus.DELIVERED  # its tracking events say so by now
    assert printer.find_postcard("never-used", 7) is None
    # Lob itself has forgotten the key: this is why the service asks find_postcard first.
    assert printer.create_postcard(request()).provider_piece_id != original.provider_piece_id
    assert sandbox.created_count() == 2


def test_list_pages_with_next_url() -> None:
    printer, sandbox = sandbox_printer()
    for i in range(3):
        printer.create_postcard(request(f"key-{i}"))
    raw = httpx.Client(transport=sandbox, auth=(KEY, ""))
    first = raw.get(f"{LOB}/postcards", params={"limit": 2}).json()
    assert first["count"] == 2 and first["next_url"]
    second = raw.get(first["next_url"]).json()
    assert second["count"] == 1 and second["next_url"] is None
    ids = [p["id"] for p in first["data"] + second["data"]]
    assert len(set(ids)) == 3


def test_cancel_inside_the_window_only() -> None:
    clock = FakeClock()
    printer, sandbox = sandbox_printer(clock=clock)
    early = printer.create_postcard(request("key-early"))
    printer.cancel_postcard(early.provider_piece_id)
    assert sandbox.piece(early.provider_piece_id)["deleted"] is True  # type: ignore[index]
    late = printer.create_postcard(request("key-late"))
    clock.sleep(301)
    with pytest.raises(RequestRejected, match="can no longer be canceled"):
        printer.cancel_postcard(late.provider_piece_id)
    with pytest.raises(NotFound):
        printer.cancel_postcard("psc_nope")


def test_limiter_keeps_a_burst_under_lobs_limit_without_a_429() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(150, 5.0, fraction=0.95, clock=clock.time, sleep=clock.sleep)
    lob_limit = SandboxBehaviour(rate_limit=(150, 5.0))
    timeline = SandboxTimeline(test_pieces_progress=False)
    sandbox = LobSandbox(
        SandboxStore(),
        lob_limit,
        api_key=KEY,
        timeline=timeline,
        clock=clock.time,
        sleep=clock.sleep,
    )
    printer = LobPrinter(
        KEY, transport=sandbox, retry=NO_RETRY, limiter=limiter, sleep=clock.sleep, clock=clock.time
    )
    started = clock.now
    for i in range(300):  # NO_RETRY: a single 429 would raise RateLimited
        printer.create_postcard(request(f"burst-{i}"))
    assert sandbox.created_count() == 300
    # 142 (95 % of 150) per 5 s window: calls 285-300 had to wait for the third window.
    assert clock.now - started >= 10.0

    unlimited = LobPrinter(
        KEY,
        transport=LobSandbox(
            SandboxStore(), lob_limit, api_key=KEY, timeline=timeline, clock=clock.time
        ),
        retry=NO_RETRY,
        rate_limit=None,
    )
    with pytest.raises(RateLimited):
        for i in range(151):
            unlimited.create_postcard(request(f"flood-{i}"))


# -- webhooks ------------------------------------------------------------------------------
SECRET = "whs_lob_secret"


def lob_event(event_type: str = "postcard.delivered", **extra: Any) -> str:
    return json.dumps(
        {
            "id": "evt_1",
            "event_type": {"id": event_type, "object": "event_type"},
            "reference_id": "psc_42",
            "date_created": "2024-05-01T12:00:00.000Z",
            "body": {
                "id": "psc_42",
                "tracking_events": [
                    {"name": "Delivered", "location": "94107", "time": "2024-05-01T11:59:00.000Z"}
                ],
            },
            "object": "event",
            **extra,
        }
    )


def signed(body: str, ts_ms: int, secret: str = SECRET) -> WebhookEnvelope:
    signature = hmac.new(secret.encode(), f"{ts_ms}.{body}".encode(), hashlib.sha256).hexdigest()
    return WebhookEnvelope(
        "lob", {"lob-signature": signature, "lob-signature-timestamp": str(ts_ms)}, body
    )


def test_signed_lob_event_parses_to_a_status() -> None:
    now = 1_714_564_800.0
    printer = LobPrinter(KEY, webhook_secret=SECRET, clock=lambda: now)
    [update] = printer.parse_webhook(signed(lob_event(), int(now * 1000)))
    assert update.status is MailpieceStatus.DELIVERED
    assert (update.provider_piece_id, update.provider_event_id) == ("psc_42", "evt_1")
    assert update.occurred_at.isoformat() == "2024-05-01T12:00:00+00:00"
    assert update.detail == "Delivered at 94107"


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("postcard.in_transit", MailpieceStatus.IN_TRANSIT),
        ("postcard.returned_to_sender", MailpieceStatus.RETURNED),
        ("postcard.re-routed", MailpieceStatus.RE_ROUTED),
        ("postcard.failed", MailpieceStatus.FAILED),
    ],
)
def test_lob_event_types_map_to_statuses(event_type: str, status: MailpieceStatus) -> None:
    [update] = LobPrinter(KEY).parse_webhook(WebhookEnvelope("lob", {}, lob_event(event_type)))
    assert update.status is status


def test_non_status_events_are_ignored() -> None:
    printer = LobPrinter(KEY)
    assert printer.parse_webhook(WebhookEnvelope("lob", {}, lob_event("postcard.viewed"))) == []
    assert printer.parse_webhook(WebhookEnvelope("lob", {}, lob_event("letter.created"))) == []


def test_bad_lob_webhooks_are_malformed_with_a_reason() -> None:
    now = 1_714_564_800.0
    printer = LobPrinter(KEY, webhook_secret=SECRET, clock=lambda: now)
    good = signed(lob_event(), int(now * 1000))
    tampered = WebhookEnvelope("lob", good.headers, good.body.replace("psc_42", "psc_43"))
    with pytest.raises(MalformedWebhook, match="does not match"):
        printer.parse_webhook(tampered)
    with pytest.raises(MalformedWebhook, match="tolerance"):
        printer.parse_webhook(signed(lob_event(), int((now - 600) * 1000)))
    with pytest.raises(MalformedWebhook, match="not signed"):
        printer.parse_webhook(WebhookEnvelope("lob", {}, lob_event()))
    with pytest.raises(MalformedWebhook, match="does not match"):
        printer.parse_webhook(signed(lob_event(), int(now * 1000), secret="other"))
    with pytest.raises(MalformedWebhook, match="event id is missing"):
        LobPrinter(KEY).parse_webhook(WebhookEnvelope("lob", {}, lob_event(id=None)))
    with pytest.raises(MalformedWebhook, match="not JSON"):
        LobPrinter(KEY).parse_webhook(WebhookEnvelope("lob", {}, "<html>"))


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"reference_id": {"id": "psc_42"}}, "reference_id is an object, not text"),
        ({"id": ["evt_1"]}, "event id is a list, not text"),
        ({"id": "evt_" + "1" * 200}, "event id is 204 characters long; at most 200 are stored"),
        ({"date_created": 1e20}, "lob date_created 1e+20 is not a representable time"),
        ({"body": {"id": "psc_42", "tracking_events": 7}}, "tracking_events is not a list"),
        (
            {"body": {"tracking_events": [{"name": "Delivered", "location": {"zip": 1}}]}},
            "lob tracking event location is an object, not text",
        ),
    ],
)
def test_lob_values_of_the_wrong_kind_are_malformed(extra: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedWebhook, match=re.escape(reason)):
        LobPrinter(KEY).parse_webhook(WebhookEnvelope("lob", {}, lob_event(**extra)))


def test_a_long_lob_detail_is_cut_and_the_status_name_kept() -> None:
    body = {"id": "psc_42", "tracking_events": [{"name": "In Transit", "location": "x" * 900}]}
    [update] = LobPrinter(KEY).parse_webhook(
        WebhookEnvelope("lob", {}, lob_event("postcard.rejected", body=body))
    )
    assert update.detail is not None and len(update.detail) == 500
    assert update.detail.startswith("In Transit at xxx")
    assert update.provider_status == "postcard.rejected"


def test_a_seconds_timestamp_is_also_accepted() -> None:
    now = 1_714_564_800.0
    printer = LobPrinter(KEY, webhook_secret=SECRET, clock=lambda: now)
    assert printer.parse_webhook(signed(lob_event(), int(now)))


def test_sandbox_webhooks_round_trip_in_order_and_verified() -> None:
    store = SandboxStore()
    timeline = SandboxTimeline(
        in_production_after=1,
        mailed_after=2,
        in_transit_after=3,
        in_local_area_after=4,
        delivered_after=5,
    )
    sandbox = LobSandbox(store, api_key=KEY, webhook_secret="s3cret", timeline=timeline)
    printer = LobPrinter(KEY, transport=sandbox, webhook_secret="s3cret", rate_limit=None)
    piece = printer.create_postcard(request())

    messages: list[str] = []
    assert emit_due_webhooks(store, messages.append, now=time.time() + 2.5) == 2
    assert emit_due_webhooks(store, messages.append, now=time.time() + 60) == 3
    updates = [u for m in messages for u in parse_envelope(m, {"lob": printer})]
    assert [u.status for u in updates] == [
        MailpieceStatus.CREATED,
        MailpieceStatus.MAILED,
        MailpieceStatus.IN_TRANSIT,
        MailpieceStatus.IN_LOCAL_AREA,
        MailpieceStatus.DELIVERED,
    ]
    assert {u.provider_piece_id for u in updates} == {piece.provider_piece_id}
    assert len({u.provider_event_id for u in updates}) == 5
    assert emit_due_webhooks(store, messages.append, now=time.time() + 60) == 0
