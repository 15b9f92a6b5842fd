"""StannpPrinter: the exact requests it sends (respx), and its behaviour against StannpSandbox."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

from mail_pipeline.domain.addresses import Address
from mail_pipeline.domain.mailpieces import MailpieceStatus
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    Conflict,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import NO_RETRY, RetryPolicy
from mail_pipeline.integrations.printers.base import (
    MalformedWebhook,
    PostcardRequest,
    WebhookEnvelope,
)
from mail_pipeline.integrations.printers.sandbox import StannpSandbox, emit_due_webhooks
from mail_pipeline.integrations.printers.sandbox.base import SandboxTimeline
from mail_pipeline.integrations.printers.stannp import StannpPrinter, postcard_form
from mail_pipeline.integrations.printers.webhooks import parse_envelope
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour

UK = "https://api-eu1.stannp.com/v1"
KEY = "stannp-key-1"
IDEM = "idem-key-000001"
FAST = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=0.0)


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def gb_address() -> Address:
    return Address.build(
        name="John Q Smith",
        line1="10 Downing Street",
        line2="Flat 2",
        city="London",
        postal_code="sw1a2aa",
        country="United Kingdom",
    )


def request(key: str = IDEM, **kw: Any) -> PostcardRequest:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "recipient_id": 7,
        "campaign_id": 3,
        "organization_id": 11,
        "to": gb_address(),
        "front_url": "https://img.test/front.jpg",
        "back_url": "https://img.test/back.jpg",
        "size": "A6",
    }
    fields.update(kw)
    return PostcardRequest(**fields)


def created(piece_id: str = "555", status: str = "received") -> dict[str, Any]:
    return {
        "success": True,
        "data": {
            "id": piece_id,
            "created": "2024-01-15T10:30:00+00:00",
            "format": "A6",
            "cost": "0.82",
            "status": status,
        },
    }


def printer(**kw: Any) -> StannpPrinter:
    return StannpPrinter(KEY, rate_limit=None, retry=NO_RETRY, **kw)


def sandbox_pair(
    behaviour: SandboxBehaviour | None = None, clock: FakeClock | None = None, **kw: Any
) -> tuple[StannpPrinter, StannpSandbox]:
    clock = clock or FakeClock()
    sandbox = StannpSandbox(
        SandboxStore(), behaviour, api_key=KEY, clock=clock.time, sleep=clock.sleep, **kw
    )
    client = StannpPrinter(
        KEY, transport=sandbox, retry=FAST, rate_limit=None, sleep=clock.sleep, clock=clock.time
    )
    return client, sandbox


# -- request shapes (respx) ----------------------------------------------------------------
@respx.mock
def test_create_sends_stannps_form_with_idempotency_header() -> None:
    route = respx.post(f"{UK}/postcards/create").mock(
        return_value=httpx.Response(200, json=created())
    )
    piece = printer().create_postcard(request())

    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    assert sent.headers["x-idempotency-key"] == IDEM
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    form = dict(parse_qsl(sent.content.decode()))
    assert form == {
        "test": "true",
        "size": "A6",
        "front": "https://img.test/front.jpg",
        "back": "https://img.test/back.jpg",
        "recipient[firstname]": "John Q",
        "recipient[lastname]": "Smith",
        "recipient[address1]": "10 Downing Street",
        "recipient[address2]": "Flat 2",
        "recipient[city]": "London",
        "recipient[postcode]": "SW1A 2AA",
        "recipient[country]": "GB",
        "tags": IDEM,
        "addons": "FIRST_CLASS",
    }
    assert (piece.provider_piece_id, piece.cost_minor, piece.currency) == ("555", 82, "GBP")
    assert piece.status is MailpieceStatus.CREATED


@respx.mock
def test_standard_postage_has_no_addon_and_4x6_becomes_a6_in_the_uk() -> None:
    route = respx.post(f"{UK}/postcards/create").mock(
        return_value=httpx.Response(200, json=created())
    )
    printer().create_postcard(request(postage="standard", size="4x6", test_mode=False))
    form = dict(parse_qsl(route.calls.last.request.content.decode()))
    assert "addons" not in form and form["size"] == "A6" and form["test"] == "false"


@respx.mock
def test_the_us_platform_is_configurable() -> None:
    route = respx.post("https://api-us1.stannp.com/v1/postcards/create").mock(
        return_value=httpx.Response(200, json=created())
    )
    us = Address.build(
        name="Jane Doe",
        line1="1 Main St",
        city="Austin",
        postal_code="78701",
        country="US",
        region="TX",
    )
    piece = printer(platform="us").create_postcard(request(to=us, size="6x9"))
    form = dict(parse_qsl(route.calls.last.request.content.decode()))
    assert form["size"] == "6x9" and form["recipient[state]"] == "TX"
    assert piece.currency == "USD"


@respx.mock
def test_a_409_replay_with_data_is_success() -> None:
    respx.post(f"{UK}/postcards/create").mock(return_value=httpx.Response(409, json=created("777")))
    assert printer().create_postcard(request()).provider_piece_id == "777"


@respx.mock
def test_errors_are_typed_by_http_status_with_stannps_text() -> None:
    route = respx.post(f"{UK}/postcards/create")
    route.mock(return_value=httpx.Response(409, json={"success": False, "error": "Duplicate"}))
    with pytest.raises(Conflict, match="Duplicate"):
        printer().create_postcard(request())
    route.mock(return_value=httpx.Response(400, json={"success": False, "error": "Bad postcode"}))
    with pytest.raises(RequestRejected, match="Bad postcode") as caught:
        printer().create_postcard(request())
    assert caught.value.status_code == 400
    route.mock(return_value=httpx.Response(401, json={"success": False, "error": "Who are you"}))
    with pytest.raises(AuthenticationFailed, match="Who are you"):
        printer().create_postcard(request())


@respx.mock
def test_find_uses_the_reporting_list_filtered_by_the_key_tag() -> None:
    route = respx.get(url__regex=rf"{UK}/reporting/list/.*").mock(
        return_value=httpx.Response(
            200,
            json={
                "success": True,
                "data": {
                    "singles": [
                        {"id": "1", "status": "delivered", "tags": "someone-else"},
                        {"id": "2", "status": "handed_over", "tags": f"x,{IDEM}"},
                    ]
                },
            },
        )
    )
    found = printer(clock=lambda: 1_705_312_800.0).find_postcard(IDEM, 7)  # 2024-01-15
    assert (
        route.calls.last.request.url.path == f"/v1/reporting/list/2023-11-16/2024-01-16/all/{IDEM}"
    )
    assert found is not None and found.provider_piece_id == "2"
    assert found.status is MailpieceStatus.MAILED


@respx.mock
def test_cancel_posts_the_id() -> None:
    route = respx.post(f"{UK}/postcards/cancel").mock(
        return_value=httpx.Response(200, json={"success": True, "data": 1})
    )
    printer().cancel_postcard("123")
    assert dict(parse_qsl(route.calls.last.request.content.decode())) == {"id": "123"}


def test_keys_stannp_would_refuse_are_refused_before_sending() -> None:
    with pytest.raises(RequestRejected, match="10-1024"):
        printer().create_postcard(request(key="short"))
    with pytest.raises(RequestRejected, match="size '6x9'"):
        printer().create_postcard(request(size="6x9"))


# -- against the sandbox ---------------------------------------------------------------------
def test_replay_gets_409_with_the_original_and_one_piece() -> None:
    client, sandbox = sandbox_pair()
    first = client.create_postcard(request())
    raw = httpx.Client(transport=sandbox, base_url=UK, auth=(KEY, ""))
    replay = raw.post(
        "/postcards/create",
        data=postcard_form(request(), "uk"),
        headers={"X-Idempotency-Key": IDEM},
    )
    assert replay.status_code == 409 and replay.json()["data"]["id"] == first.provider_piece_id
    again = client.create_postcard(request())
    assert again.provider_piece_id == first.provider_piece_id
    assert sandbox.created_count() == 1


def test_same_key_with_a_different_body_is_a_new_request_at_stannp() -> None:
    client, sandbox = sandbox_pair()
    one = client.create_postcard(request())
    two = client.create_postcard(request(front_url="https://img.test/re-rendered.jpg"))
    assert one.provider_piece_id != two.provider_piece_id
    assert sandbox.created_count() == 2


def test_lost_response_then_retry_gives_one_piece() -> None:
    store, clock = SandboxStore(), FakeClock()
    lossy = StannpSandbox(
        store, SandboxBehaviour(lost_response_rate=1.0), api_key=KEY, clock=clock.time
    )
    with pytest.raises(VendorUnavailable):
        StannpPrinter(KEY, transport=lossy, retry=NO_RETRY, rate_limit=None).create_postcard(
            request()
        )
    healthy = StannpSandbox(store, api_key=KEY, clock=clock.time)
    piece = StannpPrinter(KEY, transport=healthy, rate_limit=None).create_postcard(request())
    assert healthy.created_count() == 1
    assert healthy.piece(piece.provider_piece_id) is not None


def test_429_has_stannps_headers_and_is_retried() -> None:
    clock = FakeClock()
    client, sandbox = sandbox_pair(SandboxBehaviour(rate_limit=(1, 60.0)), clock)
    client.create_postcard(request("idem-key-a-000"))
    raw = httpx.Client(transport=sandbox, base_url=UK, auth=(KEY, ""))
    answer = raw.post("/postcards/create", data={})
    assert answer.status_code == 429
    assert answer.json() == {"success": False, "error": "Too many requests"}
    assert answer.headers["X-RateLimit-Limit"] == "1"
    assert answer.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(answer.headers["X-RateLimit-Reset"]) <= 60
    started = clock.now
    client.create_postcard(request("idem-key-b-000"))
    assert sandbox.created_count() == 2 and clock.now - started >= 59


def test_wrong_key_is_authentication_failed_and_query_key_works() -> None:
    sandbox = StannpSandbox(SandboxStore(), api_key=KEY)
    with pytest.raises(AuthenticationFailed, match="not authenticated"):
        StannpPrinter("wrong", transport=sandbox, rate_limit=None).create_postcard(request())
    by_query = httpx.Client(transport=sandbox).get(
        f"{UK}/reporting/list/2024-01-01/2024-01-02", params={"api_key": KEY}
    )
    assert by_query.status_code == 200


def test_validation_error_carries_stannps_message() -> None:
    _client, sandbox = sandbox_pair()
    raw = httpx.Client(transport=sandbox, base_url=UK, auth=(KEY, ""))
    answer = raw.post("/postcards/create", data={"recipient[firstname]": "A", "front": "f"})
    assert answer.status_code == 400
    assert answer.json() == {"success": False, "error": "The recipient's address1 is required."}
    no_front = {
        "recipient[address1]": "1 A St",
        "recipient[postcode]": "AB1 2CD",
        "recipient[lastname]": "B",
    }
    assert "front image" in raw.post("/postcards/create", data=no_front).json()["error"]
    assert sandbox.created_count() == 0


def test_test_pieces_can_answer_id_zero_like_stannp_documents() -> None:
    client, sandbox = sandbox_pair(zero_test_ids=True)
    piece = client.create_postcard(request())
    assert piece.provider_piece_id == "0" and piece.raw["status"] == "test"
    assert sandbox.created_count() == 0  # Stannp keeps no test piece
    assert sandbox.accepted_keys()  # but it remembers the key


def test_find_and_cancel_against_the_sandbox() -> None:
    clock = FakeClock()
    client, _sandbox = sandbox_pair(clock=clock)
    piece = client.create_postcard(request(test_mode=False))
    found = client.find_postcard(IDEM, 7)
    assert found is not None and found.provider_piece_id == piece.provider_piece_id
    assert client.find_postcard("idem-never-used", 7) is None

    client.cancel_postcard(piece.provider_piece_id)
    assert client.find_postcard(IDEM, 7).status is MailpieceStatus.CANCELLED  # type: ignore[union-attr]
    later = client.create_postcard(request("idem-key-late-1"))
    clock.sleep(3)  # production has started
    with pytest.raises(RequestRejected, match="cannot be cancelled"):
        client.cancel_postcard(later.provider_piece_id)


def test_reporting_status_filter_accepts_both_spellings() -> None:
    clock = FakeClock()
    client, sandbox = sandbox_pair(clock=clock)
    client.create_postcard(request(test_mode=False))
    clock.sleep(2.5)
    raw = httpx.Client(transport=sandbox, base_url=UK, auth=(KEY, ""))
    for spelling in ("producing", "printing"):
        singles = raw.get(f"/reporting/list/2023-11-14/2023-11-15/{spelling}").json()["data"]
        assert [s["status"] for s in singles["singles"]] == ["producing"]


# -- webhooks ------------------------------------------------------------------------------
def stannp_webhook(pieces: list[dict[str, Any]], event: str = "mailpiece_status") -> str:
    return json.dumps(
        {
            "webhook_id": 1234,
            "event": event,
            "created": "2024-01-15 10:30:00",
            "retries": 0,
            "mailpieces": pieces,
        }
    )


def signed(body: str, secret: str = "shh") -> WebhookEnvelope:
    signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return WebhookEnvelope("stannp", {"X-Stannp-Signature": signature}, body)


def test_webhook_statuses_in_both_spellings() -> None:
    body = stannp_webhook(
        [
            {"id": 1, "status": "printing"},
            {"id": 2, "status": "producing"},
            {"id": 3, "status": "dispatched"},
            {"id": 4, "status": "handed_over"},
            {"id": 5, "status": "local_delivery"},
            {"id": 6, "status": "delivered", "updated": "2024-01-16 08:00:00"},
            {"id": 7, "status": "returned"},
            {"id": 8, "status": "cancelled"},
        ]
    )
    updates = StannpPrinter(KEY, webhook_secret="shh").parse_webhook(signed(body))
    S = MailpieceStatus
    assert [u.status for u in updates] == [
        S.IN_PRODUCTION,
        S.IN_PRODUCTION,
        S.MAILED,
        S.MAILED,
        S.IN_LOCAL_AREA,
        S.DELIVERED,
        S.RETURNED,
        S.CANCELLED,
    ]
    assert updates[0].provider_event_id == "stannp:1:printing"
    assert updates[0].occurred_at.isoformat() == "2024-01-15T10:30:00+00:00"
    assert updates[5].occurred_at.isoformat() == "2024-01-16T08:00:00+00:00"


def test_bad_stannp_webhooks_are_malformed_and_test_url_is_ignored() -> None:
    client = StannpPrinter(KEY, webhook_secret="shh")
    good = signed(stannp_webhook([{"id": 1, "status": "delivered"}]))
    with pytest.raises(MalformedWebhook, match="does not match"):
        client.parse_webhook(WebhookEnvelope("stannp", good.headers, good.body.replace("1", "2")))
    with pytest.raises(MalformedWebhook, match="not signed"):
        client.parse_webhook(WebhookEnvelope("stannp", {}, good.body))
    with pytest.raises(MalformedWebhook, match="without an id"):
        client.parse_webhook(signed(stannp_webhook([{"status": "delivered"}])))
    test_url = json.dumps({"webhook_id": 0, "event": "test_url", "created": "x", "retries": 0})
    assert client.parse_webhook(signed(test_url)) == []


@pytest.mark.parametrize(
    ("piece", "reason"),
    [
        ({"id": 1, "status": "delivered", "tracking_ref": {"a": 1}}, "tracking_ref is an object"),
        (
            {"id": 1, "status": "delivered", "tracking_reference": [1]},
            "tracking_reference is a list",
        ),
        ({"id": [1], "status": "delivered"}, "mailpiece id is a list, not text"),
        ({"id": 1, "status": "delivered", "updated": "0001-01-01T00:00:00+14:00"}, "outside"),
        ({"id": "9" * 129, "status": "delivered"}, "piece id is 129 characters long"),
    ],
)
def test_stannp_values_of_the_wrong_kind_are_malformed(piece: dict[str, Any], reason: str) -> None:
    client = StannpPrinter(KEY, webhook_secret="shh")
    with pytest.raises(MalformedWebhook, match=re.escape(reason)):
        client.parse_webhook(signed(stannp_webhook([{"id": 2, "status": "delivered"}, piece])))


def test_stannp_tracking_refs_and_statuses_are_kept() -> None:
    client = StannpPrinter(KEY, webhook_secret="shh")
    pieces = [
        {"id": 1, "status": "delivered", "tracking_ref": 123456},
        {"id": 2, "status": {"odd": True}},
        {"id": 3, "status": "cancelled", "tracking_reference": "RM-1"},
    ]
    updates = client.parse_webhook(signed(stannp_webhook(pieces)))
    assert [(u.provider_piece_id, u.detail, u.provider_status) for u in updates] == [
        ("1", "123456", "delivered"),
        ("3", "RM-1", "cancelled"),
    ]


def test_sandbox_webhooks_are_chunked_by_50_and_verified() -> None:
    store = SandboxStore()
    timeline = SandboxTimeline(
        in_production_after=1,
        mailed_after=2,
        in_transit_after=3,
        in_local_area_after=4,
        delivered_after=5,
    )
    sandbox = StannpSandbox(store, api_key=KEY, webhook_secret="s3", timeline=timeline)
    client = StannpPrinter(KEY, transport=sandbox, webhook_secret="s3", rate_limit=None)
    ids = {
        client.create_postcard(request(f"idem-key-{i:05d}")).provider_piece_id for i in range(60)
    }

    messages: list[str] = []
    sent = emit_due_webhooks(store, messages.append, now=time.time() + 1.5)
    assert sent == 2  # 60 "printing" events: a call of 50 and a call of 10
    assert [len(json.loads(json.loads(m)["body"])["mailpieces"]) for m in messages] == [50, 10]
    emit_due_webhooks(store, messages.append, now=time.time() + 60)
    updates = [u for m in messages for u in parse_envelope(m, {"stannp": client})]
    assert {u.provider_piece_id for u in updates} == ids
    one = [u.status for u in updates if u.provider_piece_id == min(ids)]
    S = MailpieceStatus
    assert one == [S.IN_PRODUCTION, S.MAILED, S.IN_LOCAL_AREA, S.DELIVERED]
