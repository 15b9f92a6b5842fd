"""IntelliPrintPrinter: check-then-create requests (respx) and behaviour against its sandbox."""

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
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import NO_RETRY, RetryPolicy
from mail_pipeline.integrations.printers.base import (
    MalformedWebhook,
    PostcardRequest,
    WebhookEnvelope,
)
from mail_pipeline.integrations.printers.intelliprint import IntelliPrintPrinter, print_body
from mail_pipeline.integrations.printers.sandbox import IntelliPrintSandbox, emit_due_webhooks
from mail_pipeline.integrations.printers.sandbox.base import SandboxTimeline
from mail_pipeline.integrations.printers.webhooks import parse_envelope
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour

IP = "https://api.intelliprint.net/v1"
KEY = "ip-key-1"
REF = "ref-key-0001"
FAST = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=0.0)
SECRET = "whsec_" + base64.b64encode(b"a-very-secret-key").decode()


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class LoseFirstResponse(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and self.lost == 0:
            self.lost += 1
            raise httpx.ReadTimeout("lost", request=request)
        return response


def gb_address() -> Address:
    return Address.build(
        name="John Smith",
        line1="10 Downing Street",
        line2="Flat 2",
        city="London",
        postal_code="SW1A 2AA",
        country="GB",
    )


def request(key: str = REF, **kw: Any) -> PostcardRequest:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "recipient_id": 7,
        "campaign_id": 3,
        "organization_id": 11,
        "to": gb_address(),
        "front_url": "https://img.test/front.png",
        "back_url": "https://img.test/back.png",
        "size": "A6",
    }
    fields.update(kw)
    return PostcardRequest(**fields)


def job(print_id: str = "print_1", **extra: Any) -> dict[str, Any]:
    return {
        "id": print_id,
        "object": "print",
        "reference": REF,
        "type": "postcard",
        "testmode": True,
        "confirmed": True,
        "created": 1,
        "cost": {"amount": 89_000_000, "currency": "GBP"},
        "letters": [{"id": "ltr_1", "status": "waiting_to_print"}],
        **extra,
    }


def client(**kw: Any) -> IntelliPrintPrinter:
    return IntelliPrintPrinter(KEY, rate_limit=None, **kw)


# -- request shapes (respx) ----------------------------------------------------------------
@respx.mock
def test_create_looks_up_the_reference_then_posts_the_print() -> None:
    lookup = respx.get(f"{IP}/prints").mock(
        return_value=httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
    )
    create = respx.post(f"{IP}/prints").mock(return_value=httpx.Response(200, json=job()))
    piece = client().create_postcard(request())

    asked = lookup.calls.last.request
    assert asked.headers["authorization"] == f"Bearer {KEY}"
    assert dict(asked.url.params) == {"reference": REF, "testmode": "true", "limit": "10"}
    sent = create.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert "idempotency-key" not in sent.headers
    body = json.loads(sent.content)
    assert {k: body[k] for k in ("type", "testmode", "confirmed", "reference")} == {
        "type": "postcard",
        "testmode": True,
        "confirmed": True,
        "reference": REF,
    }
    assert body["recipients"] == [
        {
            "address": {
                "name": "John Smith",
                "line": "10 Downing Street, Flat 2, London",
                "postcode": "SW1A 2AA",
                "country": "GB",
            }
        }
    ]
    assert body["postage"] == {"service": "uk_first_class", "ideal_envelope": "postcard_a6"}
    assert body["metadata"] == {"recipient_id": "7", "campaign_id": "3", "organization_id": "11"}
    assert "https://img.test/front.png" in body["content"]
    assert body["content"].index("front.png") < body["content"].index("back.png")
    assert (piece.provider_piece_id, piece.cost_minor, piece.currency) == ("print_1", 89, "GBP")


@respx.mock
def test_an_existing_reference_is_returned_without_a_post() -> None:
    respx.get(f"{IP}/prints").mock(
        return_value=httpx.Response(
            200, json={"object": "list", "data": [job("print_9")], "has_more": False}
        )
    )
    create = respx.post(f"{IP}/prints")
    assert client().create_postcard(request()).provider_piece_id == "print_9"
    assert not create.called


@respx.mock
def test_postage_outside_the_uk_is_international() -> None:
    respx.get(f"{IP}/prints").mock(return_value=httpx.Response(200, json={"data": []}))
    create = respx.post(f"{IP}/prints").mock(return_value=httpx.Response(200, json=job()))
    us = Address.build(
        name="Jane Doe",
        line1="1 Main St",
        city="Austin",
        postal_code="78701",
        country="US",
        region="TX",
    )
    client().create_postcard(request(to=us, postage="standard", size="4x6"))
    body = json.loads(create.calls.last.request.content)
    assert body["postage"] == {"service": "international", "ideal_envelope": "postcard_a6"}
    assert body["recipients"][0]["address"]["line"] == "1 Main St, Austin, TX"


@respx.mock
def test_find_asks_live_then_test_and_checks_the_recipient() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        testmode = request.url.params["testmode"] == "true"
        data = [job(metadata={"recipient_id": "7"})] if testmode else []
        return httpx.Response(200, json={"data": data})

    route = respx.get(f"{IP}/prints").mock(side_effect=answer)
    found = client().find_postcard(REF, 7)
    assert [c.request.url.params["testmode"] for c in route.calls] == ["false", "true"]
    assert found is not None and found.provider_piece_id == "print_1"
    assert client().find_postcard(REF, 8) is None


@respx.mock
def test_intelliprint_errors_are_typed_with_message_and_parameter() -> None:
    respx.get(f"{IP}/prints").mock(return_value=httpx.Response(200, json={"data": []}))
    respx.post(f"{IP}/prints").mock(
        return_value=httpx.Response(
            400,
            json={
                "error": {
                    "type": "invalid_request_error",
                    "code": "invalid_parameter",
                    "message": "Postcode is not valid.",
                    "param": "recipients[0].address.postcode",
                }
            },
        )
    )
    with pytest.raises(RequestRejected, match="Postcode is not valid") as caught:
        client().create_postcard(request())
    assert "recipients[0].address.postcode" in str(caught.value)
    assert caught.value.code == "invalid_parameter"


@respx.mock
def test_cancel_deletes_the_print_job() -> None:
    route = respx.delete(f"{IP}/prints/print_5").mock(
        return_value=httpx.Response(200, json=job("print_5", deleted=True))
    )
    client().cancel_postcard("print_5")
    assert route.called


# -- against the sandbox ---------------------------------------------------------------------
def test_the_vendor_itself_has_no_idempotency() -> None:
    sandbox = IntelliPrintSandbox(SandboxStore(), api_key=KEY)
    raw = httpx.Client(transport=sandbox, base_url=IP, headers={"Authorization": f"Bearer {KEY}"})
    body = print_body(request())
    assert (
        raw.post("/prints", json=body).json()["id"] != raw.post("/prints", json=body).json()["id"]
    )
    assert len(sandbox.prints_with_reference(REF)) == 2  # why the client checks first


def test_replayed_create_returns_the_same_print() -> None:
    sandbox = IntelliPrintSandbox(SandboxStore(), api_key=KEY)
    printer = client(transport=sandbox)
    first = printer.create_postcard(request())
    assert printer.create_postcard(request()).provider_piece_id == first.provider_piece_id
    assert sandbox.created_count() == 1


def test_lost_response_is_recovered_by_the_reference_lookup() -> None:
    sandbox = IntelliPrintSandbox(SandboxStore(), api_key=KEY)
    lossy = LoseFirstResponse(sandbox)
    piece = client(transport=lossy, retry=FAST, sleep=lambda s: None).create_postcard(request())
    assert lossy.lost == 1
    assert sandbox.prints_with_reference(REF) == [piece.provider_piece_id]


def test_lost_response_then_a_later_retry_makes_one_print() -> None:
    store = SandboxStore()
    lossy = IntelliPrintSandbox(store, SandboxBehaviour(lost_response_rate=1.0), api_key=KEY)
    with pytest.raises(VendorUnavailable):
        client(transport=lossy, retry=NO_RETRY).create_postcard(request())
    healthy = IntelliPrintSandbox(store, api_key=KEY)
    piece = client(transport=healthy).create_postcard(request())
    assert healthy.prints_with_reference(REF) == [piece.provider_piece_id]


def test_429_is_answered_with_retry_after() -> None:
    sandbox = IntelliPrintSandbox(
        SandboxStore(), SandboxBehaviour(rate_limit=(1, 60.0)), api_key=KEY
    )
    raw = httpx.Client(transport=sandbox, base_url=IP, headers={"Authorization": f"Bearer {KEY}"})
    assert raw.get("/prints").status_code == 200
    answer = raw.get("/prints")
    assert answer.status_code == 429 and answer.json()["error"]["type"] == "rate_limited"
    assert 0 < int(answer.headers["Retry-After"]) <= 60


def test_a_create_answered_429_is_checked_again_and_retried() -> None:
    clock = FakeClock()
    sandbox = IntelliPrintSandbox(
        SandboxStore(), SandboxBehaviour(rate_limit=(4, 60.0)), api_key=KEY, clock=clock.time
    )
    printer = client(transport=sandbox, retry=FAST, sleep=clock.sleep)
    printer.create_postcard(request("ref-a"))  # lookup + create: 2 of 4 calls
    raw = httpx.Client(transport=sandbox, base_url=IP, headers={"Authorization": f"Bearer {KEY}"})
    assert raw.get("/prints").status_code == 200  # 3 of 4
    started = clock.now
    piece = printer.create_postcard(request("ref-b"))  # lookup 4/4, POST -> 429, wait, again
    assert clock.now - started >= 59
    assert sandbox.prints_with_reference("ref-b") == [piece.provider_piece_id]
    assert sandbox.created_count() == 2


def test_wrong_key_and_validation_errors() -> None:
    sandbox = IntelliPrintSandbox(SandboxStore(), api_key=KEY)
    with pytest.raises(AuthenticationFailed, match="Invalid API key") as caught:
        IntelliPrintPrinter("nope", transport=sandbox, rate_limit=None).create_postcard(request())
    assert caught.value.code == "invalid_api_key"
    raw = httpx.Client(transport=sandbox, base_url=IP, headers={"Authorization": f"Bearer {KEY}"})
    answer = raw.post(
        "/prints",
        json={
            "type": "postcard",
            "content": "x",
            "recipients": [{"address": {"name": "A", "line": "1 A St"}}],
        },
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "recipients[0].address.postcode"
    assert sandbox.created_count() == 0


def test_cancel_until_printing_starts() -> None:
    clock = FakeClock()
    sandbox = IntelliPrintSandbox(SandboxStore(), api_key=KEY, clock=clock.time)
    printer = client(transport=sandbox)
    early = printer.create_postcard(request("ref-early"))
    printer.cancel_postcard(early.provider_piece_id)
    assert printer.find_postcard("ref-early", 7) is None  # cancelled jobs are not listed
    late = printer.create_postcard(request("ref-late"))
    clock.sleep(2.5)
    with pytest.raises(RequestRejected, match="can no longer be cancelled"):
        printer.cancel_postcard(late.provider_piece_id)


# -- webhooks ------------------------------------------------------------------------------
def svix_headers(body: str, msg_id: str, ts: int, secret: str = SECRET) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{ts}.{body}".encode(), hashlib.sha256).digest()
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(ts),
        "svix-signature": "v1,bm90LWl0 v1," + base64.b64encode(digest).decode(),
    }


def letter_event(status: str = "returned") -> str:
    return json.dumps(
        {
            "id": "ltr_1",
            "print_id": "print_1",
            "status": status,
            "returned": {"date": 1701969673, "reason": "Delivery Refused"},
            "postage_service": "uk_second_class",
            "testmode": False,
            "type": "letter.updated",
        }
    )


def test_svix_signed_letter_update_parses() -> None:
    now = 1_701_970_000
    printer = client(webhook_secret=SECRET, clock=lambda: now)
    body = letter_event()
    [update] = printer.parse_webhook(
        WebhookEnvelope("intelliprint", svix_headers(body, "msg_1", now), body)
    )
    assert (update.provider_piece_id, update.provider_event_id) == ("print_1", "msg_1")
    assert update.status is MailpieceStatus.RETURNED and update.detail == "Delivery Refused"
    assert update.occurred_at.timestamp() == now


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("waiting_to_print", MailpieceStatus.CREATED),
        ("printing", MailpieceStatus.IN_PRODUCTION),
        ("enclosing", MailpieceStatus.IN_PRODUCTION),
        ("shipping", MailpieceStatus.MAILED),
        ("sent", MailpieceStatus.IN_TRANSIT),
        ("failed_wrong_address", MailpieceStatus.FAILED),
    ],
)
def test_letter_statuses_map(status: str, expected: MailpieceStatus) -> None:
    envelope = WebhookEnvelope(
        "intelliprint", {"svix-timestamp": "1701970000"}, letter_event(status)
    )
    [update] = client().parse_webhook(envelope)
    assert update.status is expected
    assert update.provider_event_id == f"intelliprint:ltr_1:{status}"


def test_bad_svix_webhooks_are_malformed() -> None:
    now = 1_701_970_000
    printer = client(webhook_secret=SECRET, clock=lambda: now)
    body = letter_event()
    headers = svix_headers(body, "msg_1", now)
    with pytest.raises(MalformedWebhook, match="does not match"):
        printer.parse_webhook(WebhookEnvelope("intelliprint", headers, body.replace("1", "2")))
    with pytest.raises(MalformedWebhook, match="does not match"):
        wrong = "whsec_" + base64.b64encode(b"other").decode()
        printer.parse_webhook(
            WebhookEnvelope("intelliprint", svix_headers(body, "msg_1", now, wrong), body)
        )
    with pytest.raises(MalformedWebhook, match="tolerance"):
        printer.parse_webhook(
            WebhookEnvelope("intelliprint", svix_headers(body, "msg_1", now - 900), body)
        )
    with pytest.raises(MalformedWebhook, match="not signed"):
        printer.parse_webhook(WebhookEnvelope("intelliprint", {}, body))
    other = json.dumps({"type": "mailing_list.addresses_validated", "data": {}})
    assert (
        printer.parse_webhook(
            WebhookEnvelope("intelliprint", svix_headers(other, "msg_2", now), other)
        )
        == []
    )


@pytest.mark.parametrize(
    ("event", "headers", "reason"),
    [
        ({"print_id": {"id": 1}}, {}, "print_id is an object, not text"),
        ({"returned": {"reason": ["Refused"]}}, {}, "returned.reason is a list, not text"),
        ({"returned": {"reason": "Refused\x00"}}, {}, "detail contains U+0000"),
        ({}, {"svix-id": "m" * 201}, "event id is 201 characters long"),
        ({"id": {"x": 1}}, {"svix-id": ""}, "letter.updated id is an object, not text"),
    ],
)
def test_intelliprint_values_of_the_wrong_kind_are_malformed(
    event: dict[str, Any], headers: dict[str, str], reason: str
) -> None:
    body = json.dumps({**json.loads(letter_event()), **event})
    envelope = WebhookEnvelope("intelliprint", {"svix-timestamp": "1701970000", **headers}, body)
    with pytest.raises(MalformedWebhook, match=re.escape(reason)):
        client().parse_webhook(envelope)


def test_a_svix_timestamp_in_other_digits_falls_back_to_the_ingress_time() -> None:
    envelope = WebhookEnvelope(
        "intelliprint",
        {"svix-timestamp": "\u00b2"},
        letter_event(),
        received_at="2024-05-01T12:00:00Z",
    )
    [update] = client().parse_webhook(envelope)
    assert update.occurred_at.isoformat() == "2024-05-01T12:00:00+00:00"


def test_sandbox_webhooks_round_trip() -> None:
    store = SandboxStore()
    timeline = SandboxTimeline(
        in_production_after=1,
        mailed_after=2,
        in_transit_after=3,
        in_local_area_after=4,
        delivered_after=5,
        returned_rate=1.0,
    )
    sandbox = IntelliPrintSandbox(store, api_key=KEY, webhook_secret=SECRET, timeline=timeline)
    printer = client(transport=sandbox, webhook_secret=SECRET)
    piece = printer.create_postcard(request())
    messages: list[str] = []
    assert emit_due_webhooks(store, messages.append, now=time.time() + 60) == 4
    updates = [u for m in messages for u in parse_envelope(m, {"intelliprint": printer})]
    S = MailpieceStatus
    assert [u.status for u in updates] == [S.IN_PRODUCTION, S.MAILED, S.IN_TRANSIT, S.RETURNED]
    assert {u.provider_piece_id for u in updates} == {piece.provider_piece_id}
    assert all(u.provider_event_id.startswith("msg_") for u in updates)
