"""The status-queue message: a printer's webhook, wrapped untouched in a JSON envelope.

The webhook ingress puts ``{"printer", "headers", "body", "received_at"}`` on the status queue
(``body`` is the raw request body as text: re-serialized JSON would not verify). The status
consumer calls :func:`parse_envelope`, which picks the printer named in the envelope, checks
the signature and returns the :class:`StatusUpdate` values. Anything wrong raises
:class:`MalformedWebhook` with a sentence a person can act on; such a message will never
parse, so it belongs on the dead-letter queue, not back on the queue.

Whatever the message holds, :func:`parse_envelope` returns :class:`StatusUpdate` values the
database stores as they are (they check themselves when built) or raises
:class:`MalformedWebhook`: a message nested too deep for the JSON decoder, an envelope field
of the wrong type, a printer that is not configured, a bad signature or a body with values
out of bounds all end there, with a reason that quotes values only in short, ASCII form.

Delivery is at-least-once: consumers de-duplicate on ``provider_event_id``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from mail_pipeline.integrations.printers.base import (
    MalformedWebhook,
    Printer,
    StatusUpdate,
    WebhookEnvelope,
)
from mail_pipeline.integrations.printers.common import load_json, shown


def envelope_to_json(envelope: WebhookEnvelope) -> str:
    return json.dumps(
        {
            "printer": envelope.printer,
            "headers": dict(envelope.headers),
            "body": envelope.body,
            "received_at": envelope.received_at,
        }
    )


def envelope_from_json(raw_message_body: str) -> WebhookEnvelope:
    """The envelope in a status-queue message, or :class:`MalformedWebhook` saying why not."""
    data = load_json(raw_message_body, what="the status message")
    if not isinstance(data, dict):
        raise MalformedWebhook("the status message is not a JSON object")
    printer = data.get("printer")
    if not isinstance(printer, str) or not printer:
        raise MalformedWebhook("the status message does not say which printer sent it")
    headers = data.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise MalformedWebhook("the status message headers are not a map of strings")
    body = data.get("body")
    if not isinstance(body, str):
        raise MalformedWebhook(f"the {shown(printer)} status message has no raw body text")
    received_at = data.get("received_at")
    return WebhookEnvelope(
        printer=printer,
        headers=headers,
        body=body,
        received_at=received_at if isinstance(received_at, str) else None,
    )


def parse_envelope(raw_message_body: str, printers: Mapping[str, Printer]) -> list[StatusUpdate]:
    """The status updates in one status-queue message (``[]`` for non-status events)."""
    envelope = envelope_from_json(raw_message_body)
    printer = printers.get(envelope.printer)
    if printer is None:
        known = ", ".join(sorted(printers)) or "none"
        raise MalformedWebhook(
            f"the status message comes from printer {shown(envelope.printer)}, which is not "
            f"configured (configured: {known})"
        )
    return printer.parse_webhook(envelope)
