"""Lob (US print and mail) over raw httpx.

- ``POST /v1/postcards`` as JSON with an ``Idempotency-Key`` header: Lob answers a repeated key
  (within 24 h, per test/live mode) with the postcard it already created, HTTP 200, so a
  retried create never makes a second postcard. The key is also stored in ``metadata`` so
  :meth:`LobPrinter.find_postcard` can ask for it after the 24 h window
  (``GET /v1/postcards?metadata[idempotency_key]=...``).
- Lob limits 150 requests per 5 s per key *per endpoint*; the ``/v1/postcards`` calls go
  through a :class:`~mail_pipeline.integrations.ratelimit.Limiter` at 95 % of that, so a busy
  run never meets a 429. The default limiter is per process; ``PrintersResource`` passes the
  one shared by every process on the app database, so several runs on one key keep to the
  limit together (``docs/rate_limits.md``).
- Test and live are separate worlds chosen by the key (``test_...`` / ``live_...``). A request
  marked ``test_mode`` is refused with a live key rather than printed for real.
- Webhooks are Lob event objects; ``event_type.id`` maps to :class:`MailpieceStatus`, events
  that are not a status (``postcard.viewed``, ``postcard.rendered_pdf``, ...) give ``[]``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx

from mail_pipeline.domain.addresses import Address
from mail_pipeline.domain.mailpieces import MailpieceStatus as S
from mail_pipeline.domain.mailpieces import PrintedPiece, clip_detail
from mail_pipeline.integrations.errors import IntegrationError, RequestRejected
from mail_pipeline.integrations.http import HttpApi, RetryPolicy, default_error
from mail_pipeline.integrations.printers.base import (
    MalformedWebhook,
    PostcardRequest,
    Printer,
    StatusUpdate,
    WebhookEnvelope,
)
from mail_pipeline.integrations.printers.common import (
    DEFAULT_LIMIT_FRACTION,
    build_limiter,
    detail_text,
    error_body,
    id_text,
    parse_timestamp,
    response_json,
    shown,
    webhook_json,
)
from mail_pipeline.integrations.printers.signing import (
    DEFAULT_TOLERANCE_SECONDS,
    ingress_time,
    verify_lob,
)
from mail_pipeline.integrations.ratelimit import Limiter

log = logging.getLogger(__name__)

LOB_BASE_URL = "https://api.lob.com/v1"
LOB_VERSION = "2020-02-11"
#: Published limit: requests per window, per API key, per endpoint.
LOB_RATE_LIMIT = (150, 5.0)
LOB_SIZES = frozenset({"4x6", "6x9", "6x11"})
MAIL_TYPES = {"first_class": "usps_first_class", "standard": "usps_standard"}
MAX_IDEMPOTENCY_KEY = 256
MAX_METADATA_KEYS = 20
#: Lob's rules are strict: keys under 40 characters, values under 500.
MAX_METADATA_KEY_LENGTH = 39
MAX_METADATA_VALUE_LENGTH = 499

#: Webhook event types that report a status. Anything else (viewed, rendered_pdf,
#: informed_delivery.*) is not a status change and is ignored.
EVENT_STATUSES: Mapping[str, S] = {
    "postcard.created": S.CREATED,
    "postcard.mailed": S.MAILED,
    "postcard.in_transit": S.IN_TRANSIT,
    "postcard.in_local_area": S.IN_LOCAL_AREA,
    "postcard.processed_for_delivery": S.PROCESSED_FOR_DELIVERY,
    "postcard.re-routed": S.RE_ROUTED,
    "postcard.international_exit": S.IN_TRANSIT,
    "postcard.delivered": S.DELIVERED,
    "postcard.returned_to_sender": S.RETURNED,
    "postcard.failed": S.FAILED,
    "postcard.rejected": S.FAILED,
    "postcard.deleted": S.CANCELLED,
}

#: ``tracking_events[].name`` -> status, to tell where a postcard found by a lookup stands.
TRACKING_STATUSES: Mapping[str, S] = {
    "Mailed": S.MAILED,
    "In Transit": S.IN_TRANSIT,
    "In Local Area": S.IN_LOCAL_AREA,
    "Processed for Delivery": S.PROCESSED_FOR_DELIVERY,
    "Re-Routed": S.RE_ROUTED,
    "International Exit": S.IN_TRANSIT,
    "Delivered": S.DELIVERED,
    "Returned to Sender": S.RETURNED,
}


def lob_error(response: httpx.Response) -> IntegrationError:
    """The typed error for Lob's ``{"error": {"message", "status_code", "code"}}``."""
    body = error_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        code = error.get("code")
        return default_error("lob", response, str(error["message"]), str(code) if code else None)
    return default_error("lob", response, response.text[:300] or response.reason_phrase)


def lob_address(address: Address) -> dict[str, str]:
    fields = {
        "name": address.name,
        "address_line1": address.line1,
        "address_line2": address.line2 or "",
        "address_city": address.city,
        "address_state": address.region or "",
        "address_zip": address.postal_code,
        "address_country": address.country,
    }
    return {k: v for k, v in fields.items() if v}


def lob_metadata(request: PostcardRequest) -> dict[str, str]:
    """The metadata Lob stores with the postcard; checked against Lob's limits here so a
    violation reads as our mistake, not as a vendor rejection at 3 a.m."""
    metadata = {
        "recipient_id": str(request.recipient_id),
        "campaign_id": str(request.campaign_id),
        "organization_id": str(request.organization_id),
        "idempotency_key": request.idempotency_key,
    }
    if len(metadata) > MAX_METADATA_KEYS:
        raise RequestRejected("lob", f"metadata has more than {MAX_METADATA_KEYS} keys")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_LENGTH or len(value) > MAX_METADATA_VALUE_LENGTH:
            raise RequestRejected("lob", f"metadata {key!r} is longer than Lob allows")
    return metadata


def postcard_body(request: PostcardRequest) -> dict[str, Any]:
    """The JSON body of ``POST /v1/postcards`` for a request."""
    if not request.idempotency_key or len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise RequestRejected("lob", "the idempotency key must be 1 to 256 characters")
    if request.size not in LOB_SIZES:
        raise RequestRejected("lob", f"Lob does not print postcard size {request.size!r}")
    mail_type = MAIL_TYPES.get(request.postage)
    if mail_type is None:
        raise RequestRejected("lob", f"unknown postage {request.postage!r}")
    body: dict[str, Any] = {
        "to": lob_address(request.to),
        "front": request.front_url,
        "back": request.back_url,
        "size": request.size,
        "use_type": "marketing",
        "mail_type": mail_type,
        "metadata": lob_metadata(request),
    }
    if request.sender is not None:
        body["from"] = lob_address(request.sender)
    return body


def _status_of(postcard: Mapping[str, Any]) -> S:
    if postcard.get("deleted"):
        return S.CANCELLED
    status = S.CREATED
    for event in postcard.get("tracking_events") or []:
        found = TRACKING_STATUSES.get(str(event.get("name", "")))
        if found is not None:
            status = found
    return status


def piece_from_postcard(postcard: Mapping[str, Any]) -> PrintedPiece:
    """A :class:`PrintedPiece` from a Lob postcard object."""
    piece_id = postcard.get("id")
    if not piece_id:
        raise RequestRejected("lob", "the answer carries no postcard id")
    expected = postcard.get("expected_delivery_date")
    return PrintedPiece(
        printer="lob",
        provider_piece_id=str(piece_id),
        status=_status_of(postcard),
        expected_delivery_date=date.fromisoformat(expected) if expected else None,
        raw=dict(postcard),
    )


class LobPrinter(Printer):
    name = "lob"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = LOB_BASE_URL,
        lob_version: str = LOB_VERSION,
        webhook_secret: str | None = None,
        webhook_tolerance: float = DEFAULT_TOLERANCE_SECONDS,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: tuple[int, float] | None = LOB_RATE_LIMIT,
        limit_fraction: float = DEFAULT_LIMIT_FRACTION,
        limiter: Limiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``limiter`` (else one at ``limit_fraction`` of ``rate_limit``; ``rate_limit=None``
        for none) guards ``/v1/postcards``. ``webhook_secret=None`` skips verification."""
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.webhook_tolerance = webhook_tolerance
        self.clock = clock
        self.limiter = build_limiter(limiter, rate_limit, limit_fraction)

        def api(limited: Limiter | None) -> HttpApi:
            return HttpApi(
                vendor="lob",
                base_url=base_url,
                headers={"Lob-Version": lob_version, "Accept": "application/json"},
                auth=(api_key, ""),
                retry=retry or RetryPolicy(),
                transport=transport,
                limiter=limited,
                error_mapper=lob_error,
                sleep=sleep,
            )

        #: ``/v1/postcards`` (create and list): the rate-limited endpoint.
        self._postcards = api(self.limiter)
        #: ``/v1/postcards/{id}``: another endpoint with its own limit, rarely used.
        self._postcard = api(None)

    def create_postcard(self, request: PostcardRequest) -> PrintedPiece:
        """Create (or, for a key Lob has seen, get back) the postcard for ``request``."""
        if request.test_mode and self.api_key.startswith("live_"):
            raise RequestRejected(
                "lob", "a test-mode postcard was sent with a live API key; refusing to print it"
            )
        response = self._postcards.request(
            "POST",
            "/postcards",
            json=postcard_body(request),
            headers={"Idempotency-Key": request.idempotency_key},
        )
        return piece_from_postcard(response_json("lob", response))

    def find_postcard(self, idempotency_key: str, recipient_id: int) -> PrintedPiece | None:
        """The postcard created with this key, found through its metadata (any age)."""
        response = self._postcards.request(
            "GET",
            "/postcards",
            params={"metadata[idempotency_key]": idempotency_key, "limit": 10},
        )
        found = [
            p
            for p in response_json("lob", response).get("data") or []
            if isinstance(p, dict)
            and (p.get("metadata") or {}).get("idempotency_key") == idempotency_key
        ]
        for postcard in found:
            if (postcard.get("metadata") or {}).get("recipient_id") != str(recipient_id):
                log.warning(
                    "lob postcard %s has key %s but another recipient",
                    postcard.get("id"),
                    idempotency_key,
                )
        mine = [p for p in found if p["metadata"].get("recipient_id") == str(recipient_id)]
        if not mine:
            return None
        live = [p for p in mine if not p.get("deleted")]
        return piece_from_postcard((live or mine)[0])

    def cancel_postcard(self, provider_piece_id: str) -> None:
        """Cancel inside Lob's cancellation window; outside it Lob answers an error."""
        self._postcard.request("DELETE", f"/postcards/{quote(provider_piece_id, safe='')}")

    def parse_webhook(self, envelope: WebhookEnvelope) -> list[StatusUpdate]:
        """The status in a Lob event (``[]`` for events that are not a status).

        The event id and ``reference_id`` (else ``body.id``) must be text; ``date_created``
        a time; the detail is the latest tracking event, ``"<name> at <location>"``, whose
        parts must be text when present. Anything else is :class:`MalformedWebhook`."""
        if self.webhook_secret:
            verify_lob(
                self.webhook_secret,
                envelope.headers,
                envelope.body,
                now=ingress_time(envelope.received_at, self.clock),
                tolerance=self.webhook_tolerance,
            )
        event = webhook_json("lob", envelope.body)
        event_type = event.get("event_type")
        type_id = event_type.get("id") if isinstance(event_type, dict) else event_type
        if not isinstance(type_id, str) or not type_id:
            raise MalformedWebhook("lob webhook has no event_type.id")
        status = EVENT_STATUSES.get(type_id)
        if status is None:
            log.debug("lob event %s is not a status change; ignored", shown(type_id))
            return []
        body = event.get("body")
        postcard: dict[str, Any] = body if isinstance(body, dict) else {}
        piece_id = id_text(
            event.get("reference_id") or postcard.get("id"),
            what=f"lob {type_id} event reference_id",
        )
        event_id = id_text(event.get("id"), what=f"lob {type_id} event id")
        return [
            StatusUpdate(
                printer=self.name,
                provider_piece_id=piece_id,
                provider_event_id=event_id,
                status=status,
                occurred_at=parse_timestamp(event.get("date_created"), what="lob date_created"),
                detail=_tracking_detail(postcard),
                provider_status=type_id,
            )
        ]

    def close(self) -> None:
        self._postcards.close()
        self._postcard.close()


def _tracking_detail(postcard: Mapping[str, Any]) -> str | None:
    """``"<name> at <location>"`` of the postcard's latest tracking event, if it has one."""
    events = postcard.get("tracking_events")
    if events is None:
        return None
    if not isinstance(events, list):
        raise MalformedWebhook("lob postcard tracking_events is not a list")
    tracked = [e for e in events if isinstance(e, dict)]
    if not tracked:
        return None
    latest = tracked[-1]
    name = detail_text(latest.get("name"), what="lob tracking event name")
    where = detail_text(latest.get("location"), what="lob tracking event location")
    text = f"{name or 'tracking event'}{' at ' + where if where else ''}"
    return clip_detail(text)
