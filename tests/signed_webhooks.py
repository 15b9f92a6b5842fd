"""Printer webhooks signed as each vendor signs them, for tests that feed the status consumer
bodies of their own making (hostile ones included).

The printers are the real clients with test secrets and no transport: only
``parse_webhook`` is used. Their clock is the real one, so the replay window and the
accepted event-time window behave as in production.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

from mail_pipeline.integrations.printers.base import Printer, WebhookEnvelope
from mail_pipeline.integrations.printers.intelliprint import IntelliPrintPrinter
from mail_pipeline.integrations.printers.lob import LobPrinter
from mail_pipeline.integrations.printers.signing import (
    lob_signature,
    stannp_signature,
    svix_signature,
)
from mail_pipeline.integrations.printers.stannp import StannpPrinter
from mail_pipeline.integrations.printers.webhooks import envelope_to_json

LOB_SECRET = "whs_lob_test_secret"
STANNP_SECRET = "stannp-test-secret"
SVIX_SECRET = "whsec_" + base64.b64encode(b"intelliprint-test-secret").decode()


def signing_printers() -> dict[str, Printer]:
    """The three clients, verifying with the test secrets."""
    return {
        "lob": LobPrinter("test_lob_key", webhook_secret=LOB_SECRET, rate_limit=None),
        "stannp": StannpPrinter("stannp-key", webhook_secret=STANNP_SECRET, rate_limit=None),
        "intelliprint": IntelliPrintPrinter(
            "intelliprint-key", webhook_secret=SVIX_SECRET, rate_limit=None
        ),
    }


def _received_at() -> str:
    return datetime.now(UTC).isoformat()


def lob_envelope(body: str) -> WebhookEnvelope:
    timestamp = str(int(time.time() * 1000))
    return WebhookEnvelope(
        "lob",
        {
            "lob-signature": lob_signature(LOB_SECRET, timestamp, body),
            "lob-signature-timestamp": timestamp,
        },
        body,
        received_at=_received_at(),
    )


def stannp_envelope(body: str) -> WebhookEnvelope:
    return WebhookEnvelope(
        "stannp",
        {"x-stannp-signature": stannp_signature(STANNP_SECRET, body)},
        body,
        received_at=_received_at(),
    )


def intelliprint_envelope(body: str, message_id: str = "msg_1") -> WebhookEnvelope:
    timestamp = str(int(time.time()))
    return WebhookEnvelope(
        "intelliprint",
        {
            "svix-id": message_id,
            "svix-timestamp": timestamp,
            "svix-signature": svix_signature(SVIX_SECRET, message_id, timestamp, body),
        },
        body,
        received_at=_received_at(),
    )


def lob_event(
    event_id: str,
    piece_id: str,
    event_type: str = "postcard.in_transit",
    date_created: Any = "2025-03-01T12:00:00.000Z",
    **fields: Any,
) -> dict[str, Any]:
    """A Lob event object (``fields`` replace or add top-level keys)."""
    return {
        "id": event_id,
        "event_type": {"id": event_type, "object": "event_type"},
        "reference_id": piece_id,
        "date_created": date_created,
        "body": {
            "id": piece_id,
            "tracking_events": [{"name": "In Transit", "location": "94107"}],
        },
        "object": "event",
        **fields,
    }


def stannp_webhook(pieces: list[Any], created: Any = "2025-03-01 10:30:00") -> dict[str, Any]:
    return {"webhook_id": 7, "event": "mailpiece_status", "created": created, "mailpieces": pieces}


def letter_event(print_id: str, status: str = "sent", **fields: Any) -> dict[str, Any]:
    return {
        "id": f"ltr_{print_id}",
        "print_id": print_id,
        "status": status,
        "type": "letter.updated",
        **fields,
    }


def message(envelope: WebhookEnvelope) -> str:
    """The status-queue message the ingress would send for ``envelope``."""
    return envelope_to_json(envelope)


def lob_message(event: dict[str, Any]) -> str:
    return message(lob_envelope(json.dumps(event)))


def stannp_message(webhook: dict[str, Any]) -> str:
    return message(stannp_envelope(json.dumps(webhook)))


def intelliprint_message(event: dict[str, Any], message_id: str = "msg_1") -> str:
    return message(intelliprint_envelope(json.dumps(event), message_id))
