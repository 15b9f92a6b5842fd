"""Sandbox webhooks end to end: emitted like the vendors, parsed from the status-queue envelope."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from mail_pipeline.domain.addresses import Address
from mail_pipeline.domain.mailpieces import MailpieceStatus as S
from mail_pipeline.integrations.printers.base import MalformedWebhook, PostcardRequest
from mail_pipeline.integrations.printers.sandbox import (
    emit_due_webhooks,
    sandbox_printers,
    sandbox_transports,
)
from mail_pipeline.integrations.printers.sandbox.base import SandboxTimeline
from mail_pipeline.integrations.printers.webhooks import parse_envelope
from mail_pipeline.integrations.sandbox.store import SandboxStore

QUICK = SandboxTimeline(
    in_production_after=1,
    mailed_after=2,
    in_transit_after=3,
    in_local_area_after=4,
    delivered_after=5,
)
US = Address.build(
    name="Jane Doe",
    line1="210 King St",
    city="San Francisco",
    postal_code="94107",
    country="US",
    region="CA",
)
GB = Address.build(
    name="John Smith",
    line1="10 Downing Street",
    city="London",
    postal_code="SW1A 2AA",
    country="GB",
)


def request(key: str, to: Address, **kw: Any) -> PostcardRequest:
    return PostcardRequest(
        idempotency_key=key,
        recipient_id=1,
        campaign_id=2,
        organization_id=3,
        to=to,
        front_url="https://img.test/f.png",
        back_url="https://img.test/b.png",
        size="A6" if to is GB else "4x6",
        **kw,
    )


def mail_one_each(store: SandboxStore, timeline: SandboxTimeline = QUICK) -> dict[str, str]:
    printers = sandbox_printers(store, timeline=timeline, sleep=lambda s: None)
    return {
        name: printers[name].create_postcard(request(f"{name}-key-00001", to)).provider_piece_id
        for name, to in (("lob", US), ("stannp", GB), ("intelliprint", GB))
    }


def statuses(messages: list[str], store: SandboxStore) -> dict[str, list[S]]:
    printers = sandbox_printers(store)
    found: dict[str, list[S]] = {}
    for message in messages:
        for update in parse_envelope(message, printers):
            found.setdefault(update.printer, []).append(update.status)
    return found


def test_every_printer_round_trips_its_statuses_in_order() -> None:
    store = SandboxStore()
    ids = mail_one_each(store)
    messages: list[str] = []
    emit_due_webhooks(store, messages.append, now=time.time() + 60)
    assert statuses(messages, store) == {
        "lob": [S.CREATED, S.MAILED, S.IN_TRANSIT, S.IN_LOCAL_AREA, S.DELIVERED],
        "stannp": [S.IN_PRODUCTION, S.MAILED, S.IN_LOCAL_AREA, S.DELIVERED],
        "intelliprint": [S.IN_PRODUCTION, S.MAILED, S.IN_TRANSIT],
    }
    envelope = json.loads(messages[0])
    assert set(envelope) == {"printer", "headers", "body", "received_at"}
    assert envelope["printer"] == "lob" and ids["lob"] in envelope["body"]


def test_nothing_is_sent_before_its_time_and_nothing_twice() -> None:
    store = SandboxStore()
    mail_one_each(store)
    messages: list[str] = []
    assert emit_due_webhooks(store, messages.append, now=time.time() - 60) == 0
    first = emit_due_webhooks(store, messages.append, now=time.time() + 60)
    assert first == len(messages) == 12
    assert emit_due_webhooks(store, messages.append, now=time.time() + 600) == 0


def test_returned_pieces_end_returned() -> None:
    store = SandboxStore()
    timeline = SandboxTimeline(
        in_production_after=1,
        mailed_after=2,
        in_transit_after=3,
        in_local_area_after=4,
        delivered_after=5,
        returned_rate=1.0,
    )
    mail_one_each(store, timeline)
    messages: list[str] = []
    emit_due_webhooks(store, messages.append, now=time.time() + 60)
    final = {printer: found[-1] for printer, found in statuses(messages, store).items()}
    assert final == {"lob": S.RETURNED, "stannp": S.RETURNED, "intelliprint": S.RETURNED}


def test_test_pieces_can_stay_put_like_at_the_real_vendors() -> None:
    store = SandboxStore()
    mail_one_each(store, SandboxTimeline(test_pieces_progress=False))
    messages: list[str] = []
    emit_due_webhooks(store, messages.append, now=time.time() + 60)
    assert statuses(messages, store) == {"lob": [S.CREATED]}


def test_a_failed_send_is_owed_again_later() -> None:
    store = SandboxStore()
    mail_one_each(store)
    delivered: list[str] = []

    def flaky(message: str) -> None:
        if len(delivered) == 2:
            delivered.append("FAILED")
            raise ConnectionError("queue unavailable")
        delivered.append(message)

    now = time.time() + 60
    with pytest.raises(ConnectionError):
        emit_due_webhooks(store, flaky, now=now)
    # Lob's 3rd call failed: Stannp's and IntelliPrint's are still due, Lob's rest 30 s later.
    assert emit_due_webhooks(store, delivered.append, now=now + 1) == 4 + 3
    assert emit_due_webhooks(store, delivered.append, now=now + 31) == 3
    ok = [m for m in delivered if m != "FAILED"]
    assert len(ok) == 12
    assert len(statuses(ok, store)["lob"]) == 5


def test_a_page_of_webhooks_goes_out_in_one_call_and_a_failed_page_is_owed_again_whole() -> None:
    """With ``send_many`` (the queue's ``send_batch``) each printer's due page is one call,
    in the order the statuses happened; a page whose call raised is owed again whole, and
    sending it again delivers what the one-at-a-time path would have."""
    store = SandboxStore()
    mail_one_each(store)
    calls: list[list[str]] = []

    def refuse_lob(page: list[str]) -> None:
        if json.loads(page[0])["printer"] == "lob":
            raise ConnectionError("queue unavailable")
        calls.append(page)

    now = time.time() + 60
    with pytest.raises(ConnectionError):
        emit_due_webhooks(store, pytest.fail, now=now, send_many=refuse_lob)
    assert calls == [], "lob comes first: nothing else went out before the failure"

    assert emit_due_webhooks(store, pytest.fail, now=now + 1, send_many=calls.append) == 4 + 3
    assert emit_due_webhooks(store, pytest.fail, now=now + 31, send_many=calls.append) == 5
    assert len(calls) == 3, "one call per printer's page"
    assert statuses([m for page in calls for m in page], store) == {
        "lob": [S.CREATED, S.MAILED, S.IN_TRANSIT, S.IN_LOCAL_AREA, S.DELIVERED],
        "stannp": [S.IN_PRODUCTION, S.MAILED, S.IN_LOCAL_AREA, S.DELIVERED],
        "intelliprint": [S.IN_PRODUCTION, S.MAILED, S.IN_TRANSIT],
    }


def test_cancelling_drops_the_webhooks_still_owed() -> None:
    store = SandboxStore()
    printers = sandbox_printers(store, timeline=QUICK)
    lob = printers["lob"].create_postcard(request("lob-key-00002", US))
    stannp = printers["stannp"].create_postcard(request("stannp-key-00002", GB))
    printers["lob"].cancel_postcard(lob.provider_piece_id)
    printers["stannp"].cancel_postcard(stannp.provider_piece_id)
    messages: list[str] = []
    emit_due_webhooks(store, messages.append, now=time.time() + 60)
    assert statuses(messages, store) == {
        "lob": [S.CREATED, S.CANCELLED],
        "stannp": [S.CANCELLED],
    }
    assert all(t.pending_webhooks() == 0 for t in sandbox_transports(store).values())


def test_a_tampered_envelope_is_rejected() -> None:
    store = SandboxStore()
    mail_one_each(store)
    messages: list[str] = []
    emit_due_webhooks(store, messages.append, now=time.time() + 60)
    printers = sandbox_printers(store)
    for message in messages[:1] + messages[-1:]:
        envelope = json.loads(message)
        envelope["body"] = envelope["body"].replace('"', ' "', 1)
        with pytest.raises(MalformedWebhook, match="does not match"):
            parse_envelope(json.dumps(envelope), printers)


def test_webhooks_signed_with_another_secret_are_rejected() -> None:
    store = SandboxStore()
    printers = sandbox_printers(store, timeline=QUICK, webhook_secrets={"lob": "ingress-secret"})
    printers["lob"].create_postcard(request("lob-key-00003", US))
    messages: list[str] = []
    emit_due_webhooks(store, messages.append, now=time.time() + 60)
    assert parse_envelope(messages[0], printers)  # the same secret on both sides verifies
    with pytest.raises(MalformedWebhook, match="does not match"):
        parse_envelope(messages[0], sandbox_printers(SandboxStore()))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"headers": {}, "body": "{}"}), "which printer"),
        (
            json.dumps({"printer": "royal_mail", "headers": {}, "body": "{}"}),
            "'royal_mail', which is not configured",
        ),
        (json.dumps({"printer": "lob", "headers": {}}), "no raw body"),
        (json.dumps({"printer": "lob", "headers": {"a": 1}, "body": "{}"}), "map of strings"),
        (json.dumps({"printer": "lob", "headers": {}, "body": "{}"}), "lob webhook is not signed"),
    ],
)
def test_malformed_envelopes_say_why(raw: str, reason: str) -> None:
    with pytest.raises(MalformedWebhook, match=reason):
        parse_envelope(raw, sandbox_printers(SandboxStore()))
