"""A webhook's signature age is measured from when our ingress received it, so a message
that waited in the status queue is not taken for a replay, while a replayed one still is."""

from __future__ import annotations

import json

import pytest

from mail_pipeline.integrations.printers.base import MalformedWebhook, WebhookEnvelope
from mail_pipeline.integrations.printers.lob import LobPrinter
from mail_pipeline.integrations.printers.signing import ingress_time, lob_signature

SECRET = "lob-webhook-secret"
SIGNED_AT = 1_790_000_000.0


def _envelope(received_at: str | None) -> WebhookEnvelope:
    body = json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "reference_id": "psc_1",
            "date_created": "2026-09-21T14:13:20.000Z",
            "event_type": {"id": "postcard.delivered", "object": "event_type"},
            "body": {"id": "psc_1", "metadata": {}},
        }
    )
    timestamp = str(int(SIGNED_AT * 1000))
    headers = {
        "lob-signature": lob_signature(SECRET, timestamp, body),
        "lob-signature-timestamp": timestamp,
    }
    return WebhookEnvelope("lob", headers, body, received_at=received_at)


def _printer(now: float) -> LobPrinter:
    return LobPrinter("test_key", webhook_secret=SECRET, clock=lambda: now)


def test_a_webhook_that_waited_an_hour_in_the_queue_is_accepted() -> None:
    an_hour_later = SIGNED_AT + 3600
    updates = _printer(an_hour_later).parse_webhook(_envelope("2026-09-21T14:13:21+00:00"))
    assert [u.provider_piece_id for u in updates] == ["psc_1"]


def test_a_replay_received_long_after_signing_is_refused() -> None:
    an_hour_later = SIGNED_AT + 3600
    with pytest.raises(MalformedWebhook, match="outside the 300 s tolerance"):
        _printer(an_hour_later).parse_webhook(_envelope("2026-09-21T15:13:20+00:00"))
    with pytest.raises(MalformedWebhook, match="outside the 300 s tolerance"):
        _printer(an_hour_later).parse_webhook(_envelope(None))


def test_ingress_time_falls_back_to_the_clock() -> None:
    assert ingress_time(None, lambda: 5.0) == 5.0
    assert ingress_time("not a date", lambda: 6.0) == 6.0
    assert ingress_time("2026-09-21T14:13:20Z", lambda: 0.0) == SIGNED_AT
