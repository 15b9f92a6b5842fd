"""Stannp (UK platform by default, US platform by configuration) over raw httpx.

- ``POST /v1/postcards/create``, form-encoded with PHP-style keys (``recipient[firstname]``),
  with an ``X-Idempotency-Key`` header. Stannp answers a replay of the *same body* with the
  original answer and HTTP **409**, which is a success here (``ok=`` on :class:`HttpApi`).
  Stannp compares the whole body, so the form is built deterministically from the request: a
  retry with the same :class:`PostcardRequest` is byte-identical. A retry whose body differs
  (say, re-rendered artwork URLs) would not count as a replay at Stannp.
- The idempotency key is also sent as the piece's only tag, so
  :meth:`StannpPrinter.find_postcard` can find the piece after the 24 h window through the
  reporting list, ``GET /v1/reporting/list/{start}/{end}/{status}/{tag}``. Assumptions, as
  Stannp documents both path segments as optional without saying how to skip one: ``all``
  stands for "any status", the tag filter matches one tag of the comma-separated list, and
  the look-back is ``lookback_days`` (default 60). Pieces are checked client-side for the tag
  as well, so a reporting endpoint that ignored the filter could not cause a false match.
- Errors are ``{"success": false, "error": "<free text>"}``: the HTTP status decides the type.
- ``test=true`` pieces get status ``test`` and are never dispatched. Stannp's documented test
  answer carries ``id: 0``, which is not unique; the client passes it through unchanged.
- Webhooks: ``mailpiece_status`` with up to 50 pieces per call; the reporting docs and the
  webhook docs spell statuses differently, both are accepted. Stannp sends no event id, so the
  event id is ``stannp:<piece id>:<status>``; naive timestamps are taken as UTC.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import quote

import httpx

from mail_pipeline.domain.mailpieces import MailpieceStatus as S
from mail_pipeline.domain.mailpieces import PrintedPiece
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
    split_name,
    webhook_json,
)
from mail_pipeline.integrations.printers.signing import verify_stannp
from mail_pipeline.integrations.ratelimit import Limiter

log = logging.getLogger(__name__)

STANNP_BASE_URLS = {
    "uk": "https://api-eu1.stannp.com/v1",
    "us": "https://api-us1.stannp.com/v1",
}
#: Documented as 300 requests per minute for most endpoints (Starter plan).
STANNP_RATE_LIMIT = (300, 60.0)
#: ``PostcardRequest.size`` -> Stannp format, per platform. A US "4x6" request sent to the UK
#: platform becomes the nearest UK card, A6.
SIZES: Mapping[str, Mapping[str, str]] = {
    "uk": {"A6": "A6", "A5": "A5", "A5-ENV": "A5-ENV", "A5-PORT": "A5-PORT", "4x6": "A6"},
    "us": {"4x6": "4x6", "6x9": "6x9", "6x11": "6x11"},
}
IDEMPOTENCY_KEY_LENGTH = (10, 1024)

#: Both spellings: the reporting docs and the webhook docs differ.
STATUSES: Mapping[str, S] = {
    "test": S.CREATED,
    "received": S.CREATED,
    "created": S.CREATED,
    "producing": S.IN_PRODUCTION,
    "printing": S.IN_PRODUCTION,
    "handed_over": S.MAILED,
    "dispatched": S.MAILED,
    "local_delivery": S.IN_LOCAL_AREA,
    "delivered": S.DELIVERED,
    "returned": S.RETURNED,
    "cancelled": S.CANCELLED,
    "canceled": S.CANCELLED,
}


def stannp_error(response: httpx.Response) -> IntegrationError:
    """The typed error for ``{"success": false, "error": "..."}``, typed by HTTP status."""
    body = error_body(response)
    message = body.get("error") if isinstance(body, dict) else None
    text = str(message) if message else (response.text[:300] or response.reason_phrase)
    return default_error("stannp", response, text)


def _replay_or_success(response: httpx.Response) -> bool:
    """A 2xx, or a 409 idempotent replay carrying the original ``data``."""
    if response.is_success:
        return True
    if response.status_code != 409:
        return False
    body = error_body(response)
    return isinstance(body, dict) and bool(body.get("success")) and "data" in body


def postcard_form(request: PostcardRequest, platform: str) -> dict[str, str]:
    """The form of ``POST /v1/postcards/create``; the same request gives the same bytes."""
    low, high = IDEMPOTENCY_KEY_LENGTH
    if not low <= len(request.idempotency_key) <= high or "," in request.idempotency_key:
        raise RequestRejected(
            "stannp", f"the idempotency key must be {low}-{high} characters without commas"
        )
    size = SIZES[platform].get(request.size)
    if size is None:
        raise RequestRejected(
            "stannp", f"the {platform.upper()} platform does not print size {request.size!r}"
        )
    if request.postage not in ("first_class", "standard"):
        raise RequestRejected("stannp", f"unknown postage {request.postage!r}")
    first, last = split_name(request.to.name)
    to = request.to
    form = {
        "test": "true" if request.test_mode else "false",
        "size": size,
        "front": request.front_url,
        "back": request.back_url,
        "recipient[firstname]": first,
        "recipient[lastname]": last,
        "recipient[address1]": to.line1,
        "recipient[address2]": to.line2 or "",
        "recipient[city]": to.city,
        "recipient[postcode]": to.postal_code,
        "recipient[country]": to.country,
        "tags": request.idempotency_key,
    }
    if to.region:
        form["recipient[state]" if platform == "us" else "recipient[county]"] = to.region
    if request.postage == "first_class":
        form["addons"] = "FIRST_CLASS"
    return form


def _cost_minor(cost: Any) -> int | None:
    try:
        return int(Decimal(str(cost)) * 100)
    except (InvalidOperation, ValueError):
        return None


class StannpPrinter(Printer):
    name = "stannp"

    def __init__(
        self,
        api_key: str,
        *,
        platform: Literal["uk", "us"] = "uk",
        base_url: str | None = None,
        webhook_secret: str | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: tuple[int, float] | None = STANNP_RATE_LIMIT,
        limit_fraction: float = DEFAULT_LIMIT_FRACTION,
        limiter: Limiter | None = None,
        lookback_days: int = 60,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Stannp's limit is per account, so every call goes through the one limiter.
        ``webhook_secret=None`` skips signature verification."""
        self.platform = platform
        self.currency = "GBP" if platform == "uk" else "USD"
        self.webhook_secret = webhook_secret
        self.lookback_days = lookback_days
        self.clock = clock
        self.limiter = build_limiter(limiter, rate_limit, limit_fraction)
        self._api = HttpApi(
            vendor="stannp",
            base_url=base_url or STANNP_BASE_URLS[platform],
            headers={"Accept": "application/json"},
            auth=(api_key, ""),
            retry=retry or RetryPolicy(),
            transport=transport,
            limiter=self.limiter,
            error_mapper=stannp_error,
            sleep=sleep,
        )

    def create_postcard(self, request: PostcardRequest) -> PrintedPiece:
        """Create the piece, or get back the original answer for a replayed key (409)."""
        response = self._api.request(
            "POST",
            "/postcards/create",
            data=postcard_form(request, self.platform),
            headers={"X-Idempotency-Key": request.idempotency_key},
            ok=_replay_or_success,
        )
        return self._piece(self._data(response))

    def find_postcard(self, idempotency_key: str, recipient_id: int) -> PrintedPiece | None:
        """The piece tagged with this key in the last ``lookback_days`` (see module doc)."""
        today = datetime.fromtimestamp(self.clock(), tz=UTC).date()
        start = today - timedelta(days=self.lookback_days)
        end = today + timedelta(days=1)
        response = self._api.request(
            "GET", f"/reporting/list/{start}/{end}/all/{quote(idempotency_key, safe='')}"
        )
        data = self._data(response)
        singles = data.get("singles") if isinstance(data, dict) else data
        for piece in singles or []:
            if isinstance(piece, dict) and idempotency_key in str(piece.get("tags", "")).split(","):
                return self._piece(piece)
        return None

    def cancel_postcard(self, provider_piece_id: str) -> None:
        """Cancel a piece whose production has not started (Stannp refuses later)."""
        response = self._api.request("POST", "/postcards/cancel", data={"id": provider_piece_id})
        self._data(response)

    def parse_webhook(self, envelope: WebhookEnvelope) -> list[StatusUpdate]:
        """The statuses in a ``mailpiece_status`` webhook (``[]`` for other events).

        Every piece needs an id (text or number); a piece with a status we do not know is
        skipped; ``tracking_ref`` / ``tracking_reference`` must be text (or a number) when
        present. One bad piece refuses the whole webhook: it is one message, and partly
        applying it would hide the rest from whoever looks at the dead-letter queue."""
        if self.webhook_secret:
            verify_stannp(self.webhook_secret, envelope.headers, envelope.body)
        payload = webhook_json("stannp", envelope.body)
        event = payload.get("event")
        if event != "mailpiece_status":
            log.debug("stannp %s webhook is not about mailpieces; ignored", shown(event))
            return []
        pieces = payload.get("mailpieces")
        if not isinstance(pieces, list):
            raise MalformedWebhook("stannp mailpiece_status webhook has no mailpieces list")
        sent_at = payload.get("created")
        updates = []
        for piece in pieces:
            if not isinstance(piece, dict) or piece.get("id") in (None, ""):
                raise MalformedWebhook("stannp webhook has a mailpiece without an id")
            piece_id = id_text(piece["id"], what="stannp mailpiece id")
            raw = piece.get("status", "")
            raw_status = raw.strip().lower() if isinstance(raw, str) else ""
            status = STATUSES.get(raw_status)
            if status is None:
                log.warning(
                    "stannp piece %s has unknown status %s; skipped", shown(piece_id), shown(raw)
                )
                continue
            when = piece.get("updated") or sent_at
            tracking = piece.get("tracking_ref")
            what = "stannp tracking_ref"
            if tracking is None or tracking == "":
                tracking, what = piece.get("tracking_reference"), "stannp tracking_reference"
            updates.append(
                StatusUpdate(
                    printer=self.name,
                    provider_piece_id=piece_id,
                    provider_event_id=f"stannp:{piece_id}:{raw_status}",
                    status=status,
                    occurred_at=parse_timestamp(when, what="stannp webhook time"),
                    detail=detail_text(tracking, what=what),
                    provider_status=raw_status,
                )
            )
        return updates

    def close(self) -> None:
        self._api.close()

    # -- helpers --------------------------------------------------------------------------
    def _data(self, response: httpx.Response) -> Any:
        body = response_json("stannp", response)
        if not body.get("success"):
            message = body.get("error") or "the answer says success: false"
            raise RequestRejected("stannp", str(message), status_code=response.status_code)
        return body.get("data")

    def _piece(self, data: Any) -> PrintedPiece:
        if not isinstance(data, dict) or data.get("id") is None:
            raise RequestRejected("stannp", "the answer carries no mailpiece id")
        return PrintedPiece(
            printer=self.name,
            provider_piece_id=str(data["id"]),
            status=STATUSES.get(str(data.get("status", "")).lower(), S.CREATED),
            cost_minor=_cost_minor(data.get("cost")),
            currency=self.currency,
            raw=dict(data),
        )
