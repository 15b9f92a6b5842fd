"""Lob's stand-in: ``/v1/postcards`` with Lob's validation, errors, idempotency and webhooks.

Imitated: Basic auth with the key as username (``test_``/``live_`` keys are separate worlds,
publishable keys are refused with 403); JSON creates validated like Lob (``to`` required,
``address_line1 + address_line2`` at most 50 characters -> ``ADDRESS_LENGTH_EXCEEDS_LIMIT``,
``use_type``, sizes, metadata limits) with ``{"error": {"message", "status_code", "code"}}``
bodies; ``Idempotency-Key`` header or ``idempotency_key`` query (not both, at most 256
characters) kept 24 h per mode, a replay answering 200 with the same postcard; cursor-paged
listing filtered by ``metadata[...]``; ``DELETE`` inside the cancellation window; 429 with
``X-Rate-Limit-*``/``ratelimit-*`` headers and Lob's "wait 5 seconds" message; event webhooks
signed with ``Lob-Signature`` over ``"{ms timestamp}.{body}"``.
Not imitated: form/multipart creates (the client sends JSON), templates, address verification.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx

from mail_pipeline.integrations.printers.base import WebhookEnvelope
from mail_pipeline.integrations.printers.common import iso_utc
from mail_pipeline.integrations.printers.lob import LOB_BASE_URL, LOB_RATE_LIMIT, LOB_SIZES
from mail_pipeline.integrations.printers.sandbox.base import (
    CREATED,
    DELIVERED,
    IDEMPOTENCY_WINDOW_SECONDS,
    IN_LOCAL_AREA,
    IN_TRANSIT,
    MAILED,
    RETURNED,
    PrinterSandbox,
    basic_username,
    new_id,
)
from mail_pipeline.integrations.printers.signing import lob_signature
from mail_pipeline.integrations.sandbox.transport import atomic, json_response

TRACKING_NAMES = {
    MAILED: "Mailed",
    IN_TRANSIT: "In Transit",
    IN_LOCAL_AREA: "In Local Area",
    DELIVERED: "Delivered",
    RETURNED: "Returned to Sender",
}
DELIVERY_DAYS = {"usps_first_class": 4, "usps_standard": 9}
US_ZIP = re.compile(r"^\d{5}(-\d{4})?$")


class LobSandbox(PrinterSandbox):
    vendor = "lob"
    routes: ClassVar[list[tuple[str, str, str]]] = [
        ("POST", r"/v1/postcards", "create"),
        ("GET", r"/v1/postcards", "list_postcards"),
        ("GET", r"/v1/postcards/(?P<piece_id>[^/]+)", "retrieve"),
        ("DELETE", r"/v1/postcards/(?P<piece_id>[^/]+)", "cancel"),
    ]
    stage_events = {
        CREATED: "postcard.created",
        MAILED: "postcard.mailed",
        IN_TRANSIT: "postcard.in_transit",
        IN_LOCAL_AREA: "postcard.in_local_area",
        DELIVERED: "postcard.delivered",
        RETURNED: "postcard.returned_to_sender",
    }
    event_id_prefix = "evt_"
    default_api_key = "test_sandbox_lob"
    default_webhook_secret = "lob-sandbox-webhook-secret"
    #: Lob's default cancellation window.
    cancel_window_seconds = 300.0

    @property
    def mode(self) -> str:
        return "live" if self.api_key.startswith("live_") else "test"

    # -- the vendor's answers -------------------------------------------------------------
    def error(self, status: int, message: str, code: str | None = None) -> httpx.Response:
        code = code if code == "rate_limit_exceeded" else (code or "INVALID").upper()
        return json_response(
            status, {"error": {"message": message, "status_code": status, "code": code}}
        )

    def rate_limited(self, retry_after: float) -> httpx.Response:
        limit = (self.behaviour.rate_limit or LOB_RATE_LIMIT)[0]
        headers = {
            "X-Rate-Limit-Limit": str(limit),
            "X-Rate-Limit-Remaining": "0",
            # Epoch seconds on the wall clock, as Lob sends it.
            "X-Rate-Limit-Reset": str(math.ceil(time.time() + retry_after)),
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": "0",
            "ratelimit-reset": str(math.ceil(retry_after)),
        }
        message = "Too many requests. Please wait 5 seconds before retrying."
        body = {"error": {"message": message, "status_code": 429, "code": "rate_limit_exceeded"}}
        return json_response(429, body, headers)

    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        username = basic_username(request)
        if not username:
            return self.error(
                401, "Missing authentication. Use your API key as username.", "UNAUTHORIZED"
            )
        if username.startswith(("test_pub", "live_pub")):
            return self.error(
                403,
                "Publishable keys cannot be used for this endpoint.",
                "PUBLISHABLE_KEY_NOT_ALLOWED",
            )
        if username != self.api_key:
            return self.error(401, "Your API key is not valid.", "UNAUTHORIZED")
        return None

    # -- routes ---------------------------------------------------------------------------
    @atomic
    def create(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key")
        query_key = request.url.params.get("idempotency_key")
        if key and query_key:
            return self.error(
                422, "Send the idempotency key as a header or a query parameter, not both."
            )
        key = key or query_key
        if key is not None and not 0 < len(key) <= 256:
            return self.error(422, "idempotency_key must be 1 to 256 characters")
        try:
            body = json.loads(request.read() or b"null")
        except ValueError:
            return self.error(422, "The request body must be valid JSON.")
        if not isinstance(body, dict):
            return self.error(422, "The request body must be a JSON object.")
        problem = _invalid(body)
        if problem is not None:
            return self.error(422, *problem)

        now = self.clock()
        piece_id = new_id("psc_")
        postcard = _postcard(piece_id, body, now, self.cancel_window_seconds)
        if key is not None:
            record = {"piece_id": piece_id, "created_at": now, "postcard": postcard}
            stored, is_new = self.store.insert_if_absent(self.keys, f"{self.mode}:{key}", record)
            if not is_new:
                if now - stored["created_at"] < IDEMPOTENCY_WINDOW_SECONDS:
                    current = self.piece(stored["piece_id"])
                    shown = self._render(current, now) if current else stored["postcard"]
                    return json_response(200, shown)
                self.store.put(self.keys, f"{self.mode}:{key}", record)
        stages = self.timeline.stages(piece_id, now, test=self.mode == "test")
        self.store.put(
            self.pieces,
            piece_id,
            {"postcard": postcard, "mode": self.mode, "created_at": now, "stages": stages},
        )
        self.schedule(piece_id, stages, lambda stage, at: _with_tracking(postcard, stages, at))
        return json_response(200, postcard)

    def list_postcards(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        try:
            limit = int(params.get("limit", "10"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return self.error(422, "limit must be an integer from 1 to 100")
        if params.get("after") and params.get("before"):
            return self.error(422, "Send only one of before or after.")
        wanted = {
            k[len("metadata[") : -1]: v
            for k, v in params.multi_items()
            if k.startswith("metadata[") and k.endswith("]")
        }
        now = self.clock()
        matches = [
            self._render(doc, now)
            for _key, doc in self.scan(self.pieces)
            if doc["mode"] == self.mode
            and all(doc["postcard"]["metadata"].get(k) == v for k, v in wanted.items())
        ]
        matches.reverse()  # newest first, as Lob lists
        start = _cursor(params.get("after")) if params.get("after") else 0
        if params.get("before"):
            start = max(0, _cursor(params["before"]) - limit)
        page = matches[start : start + limit]
        base = [(k, v) for k, v in params.multi_items() if k not in ("after", "before")]
        body: dict[str, Any] = {
            "data": page,
            "object": "list",
            "count": len(page),
            "next_url": _page_url(base, "after", start + limit)
            if start + limit < len(matches)
            else None,
            "previous_url": _page_url(base, "before", start) if start > 0 else None,
        }
        if "total_count" in params.get_list("include[]") or "total_count" in params.get_list(
            "include"
        ):
            body["total_count"] = len(matches)
        return json_response(200, body)

    def retrieve(self, request: httpx.Request, piece_id: str) -> httpx.Response:
        doc = self.piece(piece_id)
        if doc is None or doc["mode"] != self.mode:
            return self.error(404, "postcard not found", "NOT_FOUND")
        return json_response(200, self._render(doc, self.clock()))

    def cancel(self, request: httpx.Request, piece_id: str) -> httpx.Response:
        doc = self.piece(piece_id)
        if doc is None or doc["mode"] != self.mode:
            return self.error(404, "postcard not found", "NOT_FOUND")
        if doc.get("deleted"):
            return json_response(200, {"id": piece_id, "deleted": True})
        now = self.clock()
        if now - doc["created_at"] > self.cancel_window_seconds:
            return self.error(
                422, f"{piece_id} has been sent to production and can no longer be canceled"
            )
        doc["deleted"] = True
        unreached = [s for s in doc["stages"] if s[1] > now]
        doc["stages"] = [s for s in doc["stages"] if s[1] <= now]
        self.store.put(self.pieces, piece_id, doc)
        self.forgive(piece_id, unreached)
        self.owe(piece_id, "postcard.deleted", now, self._render(doc, now))
        return json_response(200, {"id": piece_id, "deleted": True})

    def _render(self, doc: dict[str, Any], now: float) -> dict[str, Any]:
        postcard = _with_tracking(doc["postcard"], doc["stages"], now)
        if doc.get("deleted"):
            postcard["deleted"] = True
        return postcard


def render_webhooks(
    due: list[tuple[str, dict[str, Any]]], now: float
) -> list[tuple[WebhookEnvelope, list[str]]]:
    """One Lob event per call, signed over ``"{ms timestamp}.{raw body}"``."""
    calls = []
    for key, event in due:
        body = json.dumps(
            {
                "id": event["event_id"],
                "body": event["payload"],
                "reference_id": event["piece_id"],
                "event_type": {
                    "id": event["event"],
                    "enabled_for_test": True,
                    "resource": "postcards",
                    "object": "event_type",
                },
                "date_created": iso_utc(event["occurred_at"], milliseconds=True),
                "object": "event",
            }
        )
        timestamp = str(int(now * 1000))
        headers = {
            "Content-Type": "application/json",
            "Lob-Signature": lob_signature(event["secret"], timestamp, body),
            "Lob-Signature-Timestamp": timestamp,
        }
        calls.append((WebhookEnvelope("lob", headers, body, received_at=iso_utc(now)), [key]))
    return calls


def _invalid(body: dict[str, Any]) -> tuple[str, str] | None:
    """``(message, code)`` when Lob would refuse this postcard, else ``None``."""
    to = body.get("to")
    if to is None:
        return "to is required", "INVALID"
    for name in ("front", "back"):
        if not body.get(name):
            return f"{name} is required", "INVALID"
    if body.get("use_type") not in ("marketing", "operational"):
        return "use_type must be one of marketing, operational", "INVALID"
    size = body.get("size", "4x6")
    if size not in LOB_SIZES:
        return f"size must be one of {', '.join(sorted(LOB_SIZES))}", "INVALID"
    if body.get("mail_type", "usps_first_class") not in DELIVERY_DAYS:
        return "mail_type must be one of usps_first_class, usps_standard", "INVALID"
    for side in ("to", "from"):
        problem = _invalid_address(side, body.get(side), size)
        if problem is not None:
            return problem
    return _invalid_metadata(body.get("metadata", {}))


def _invalid_address(side: str, address: Any, size: str) -> tuple[str, str] | None:
    if address is None and side == "from":
        return None
    if isinstance(address, str):
        return None if address.startswith("adr_") else (f"{side} is not an address id", "INVALID")
    if not isinstance(address, dict):
        return f"{side} must be an address object or id", "INVALID"
    if not address.get("address_line1"):
        return f"{side}.address_line1 is required", "INVALID"
    if not (address.get("name") or address.get("company")):
        return f"{side} must have a name or a company", "INVALID"
    lines = len(address["address_line1"]) + len(address.get("address_line2") or "")
    if lines > 50:
        return (
            f"{side}.address_line1 and address_line2 together must be 50 characters or fewer",
            "ADDRESS_LENGTH_EXCEEDS_LIMIT",
        )
    country = (address.get("address_country") or "US").upper()
    if country in ("US", "UNITED STATES"):
        for field in ("address_city", "address_state", "address_zip"):
            if not address.get(field):
                return f"{side}.{field} is required for US addresses", "INVALID"
        if not US_ZIP.match(str(address["address_zip"])):
            return f"{side}.address_zip must be a 5 or 9 digit ZIP code", "INVALID"
    elif side == "to" and size != "4x6":
        return "Only 4x6 postcards can be sent to international addresses", "INVALID"
    return None


def _invalid_metadata(metadata: Any) -> tuple[str, str] | None:
    if not isinstance(metadata, dict):
        return "metadata must be an object", "INVALID"
    if len(metadata) > 20:
        return "metadata may have at most 20 keys", "INVALID"
    for key, value in metadata.items():
        if len(key) >= 40:
            return f"metadata key {key!r} must be under 40 characters", "INVALID"
        if not isinstance(value, str):
            return f"metadata value for {key!r} must be a string", "INVALID"
        if len(value) >= 500:
            return f"metadata value for {key!r} must be under 500 characters", "INVALID"
    return None


def _postcard(piece_id: str, body: dict[str, Any], now: float, window: float) -> dict[str, Any]:
    mail_type = body.get("mail_type", "usps_first_class")
    created = datetime.fromtimestamp(now, tz=UTC)
    expected = created.date() + timedelta(days=DELIVERY_DAYS[mail_type])

    def address(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {"id": new_id("adr_"), **value, "object": "address"}

    expires = int(now) + 30 * 86400
    return {
        "id": piece_id,
        "description": body.get("description"),
        "metadata": body.get("metadata", {}),
        "to": address(body["to"]),
        "from": address(body.get("from")),
        "front_template_id": None,
        "back_template_id": None,
        "url": f"https://lob-assets.com/postcards/{piece_id}.pdf?expires={expires}&signature=sbx",
        "thumbnails": [
            {
                size: f"https://lob-assets.com/postcards/{piece_id}_thumb_{size}_{page}.png"
                for size in ("small", "medium", "large")
            }
            for page in (1, 2)
        ],
        "carrier": "USPS",
        "tracking_events": [],
        "size": body.get("size", "4x6"),
        "mail_type": mail_type,
        "use_type": body["use_type"],
        "expected_delivery_date": expected.isoformat(),
        "send_date": iso_utc(now + window, milliseconds=True),
        "date_created": iso_utc(now, milliseconds=True),
        "date_modified": iso_utc(now, milliseconds=True),
        "object": "postcard",
    }


def _with_tracking(postcard: dict[str, Any], stages: list[list[Any]], now: float) -> dict[str, Any]:
    """The postcard as Lob shows it at ``now``: tracking events of the stages reached."""
    to = postcard.get("to")
    zip_code = to.get("address_zip") if isinstance(to, dict) else None
    events = []
    for stage, at in stages:
        if at > now or stage not in TRACKING_NAMES:
            continue
        digest = hashlib.sha1(f"{postcard['id']}:{stage}".encode()).hexdigest()[:24]
        events.append(
            {
                "id": f"evnt_{digest}",
                "type": "normal",
                "name": TRACKING_NAMES[stage],
                "location": zip_code,
                "time": iso_utc(at, milliseconds=True),
                "date_created": iso_utc(at, milliseconds=True),
                "date_modified": iso_utc(at, milliseconds=True),
                "object": "tracking_event",
            }
        )
    return {**postcard, "tracking_events": events}


def _cursor(value: str) -> int:
    try:
        return max(0, int(base64.urlsafe_b64decode(value.encode()).decode()))
    except ValueError:
        return 0


def _page_url(params: list[tuple[str, str]], name: str, offset: int) -> str:
    cursor = base64.urlsafe_b64encode(str(offset).encode()).decode()
    return f"{LOB_BASE_URL}/postcards?{urlencode([*params, (name, cursor)])}"
