"""Stannp's stand-in: form-encoded postcards, 409 replays, reporting lists and signed webhooks.

Imitated: Basic auth with the key as username or ``?api_key=`` (401 ``{"success": false,
"error"}`` otherwise); PHP-style form fields validated like Stannp (recipient address, artwork,
sizes of the platform - UK on ``api-eu1``, US on ``api-us1`` - and addons); ``X-Idempotency-Key``
(or an ``idempotency_key`` field), 10-1024 characters, kept 24 h: a request with the same key
*and the same body* gets the original answer with **HTTP 409** (Stannp compares the whole
body, so a different body with a used key is a new request); ``test=true`` pieces with status
``test`` (and ``id: 0``, unkept, when ``zero_test_ids`` - the documented answer); cancellation
until production starts; ``/reporting/list/{start}/{end}/{status}/{tag}`` with ``all`` as any
status; 429 with ``X-RateLimit-*`` (reset in seconds); ``mailpiece_status`` webhooks of up to
50 pieces, signed with hex HMAC-SHA256 of the body in ``X-Stannp-Signature``.

The reporting endpoints spell statuses ``received/producing/handed_over/...`` and the webhooks
``printing/dispatched/...``; the sandbox uses each spelling where Stannp documents it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import httpx

from mail_pipeline.integrations.printers.base import WebhookEnvelope
from mail_pipeline.integrations.printers.common import iso_utc
from mail_pipeline.integrations.printers.sandbox.base import (
    CANCELLED,
    CREATED,
    DELIVERED,
    IDEMPOTENCY_WINDOW_SECONDS,
    IN_LOCAL_AREA,
    IN_PRODUCTION,
    IN_TRANSIT,
    MAILED,
    RETURNED,
    PrinterSandbox,
    basic_username,
    stage_at,
)
from mail_pipeline.integrations.printers.signing import stannp_signature
from mail_pipeline.integrations.printers.stannp import SIZES, STANNP_RATE_LIMIT
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour, atomic, json_response

#: Stage -> status as the reporting endpoints spell it.
REPORTING_STATUS = {
    CREATED: "received",
    IN_PRODUCTION: "producing",
    MAILED: "handed_over",
    IN_TRANSIT: "handed_over",
    IN_LOCAL_AREA: "local_delivery",
    DELIVERED: "delivered",
    RETURNED: "returned",
    CANCELLED: "cancelled",
}
ALIASES = {"printing": "producing", "dispatched": "handed_over", "created": "received"}
ADDONS = {"FIRST_CLASS", "STOCK_350_SILK", "STOCK_350_UNCOATED"}
PRICES = {
    "A6": "0.62",
    "A5": "0.78",
    "A5-ENV": "0.95",
    "A5-PORT": "0.78",
    "4x6": "0.61",
    "6x9": "0.84",
    "6x11": "1.02",
}
FIRST_CLASS_SURCHARGE = Decimal("0.20")
WEBHOOK_CHUNK = 50


def _stannp_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


class StannpSandbox(PrinterSandbox):
    vendor = "stannp"
    routes: ClassVar[list[tuple[str, str, str]]] = [
        ("POST", r"/v1/postcards/create", "create"),
        ("GET", r"/v1/postcards/get/(?P<piece_id>[^/]+)", "retrieve"),
        ("POST", r"/v1/postcards/cancel", "cancel"),
        (
            "GET",
            r"/v1/reporting/list/(?P<start>[^/]+)/(?P<end>[^/]+)"
            r"(?:/(?P<status>[^/]*))?(?:/(?P<tag>[^/]+))?",
            "report",
        ),
    ]
    #: Webhook spelling.
    stage_events = {
        IN_PRODUCTION: "printing",
        MAILED: "dispatched",
        IN_LOCAL_AREA: "local_delivery",
        DELIVERED: "delivered",
        RETURNED: "returned",
    }
    default_api_key = "sandbox-stannp-key"
    default_webhook_secret = "stannp-sandbox-webhook-secret"

    def __init__(
        self,
        store: SandboxStore | None = None,
        behaviour: SandboxBehaviour | None = None,
        *,
        zero_test_ids: bool = False,
        webhook_id: int = 1234,
        **kwargs: Any,
    ) -> None:
        """``zero_test_ids`` answers test pieces with Stannp's documented ``id: 0`` (and keeps
        no piece, so nothing can be tracked); by default test pieces get real ids."""
        super().__init__(store, behaviour, **kwargs)
        self.zero_test_ids = zero_test_ids
        self.webhook_id = webhook_id

    # -- the vendor's answers -------------------------------------------------------------
    def error(self, status: int, message: str, code: str | None = None) -> httpx.Response:
        return json_response(status, {"success": False, "error": message})

    def rate_limited(self, retry_after: float) -> httpx.Response:
        limit = (self.behaviour.rate_limit or STANNP_RATE_LIMIT)[0]
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(math.ceil(retry_after)),
        }
        return json_response(429, {"success": False, "error": "Too many requests"}, headers)

    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        key = basic_username(request) or request.url.params.get("api_key")
        if key != self.api_key:
            return self.error(401, "You are not authenticated. Check your API key.")
        return None

    def _platform(self, request: httpx.Request) -> str:
        return "us" if "api-us1" in request.url.host else "uk"

    # -- routes ---------------------------------------------------------------------------
    @atomic
    def create(self, request: httpx.Request) -> httpx.Response:
        raw = request.read()
        form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        key = request.headers.get("x-idempotency-key") or form.get("idempotency_key")
        if key is not None and not 10 <= len(key) <= 1024:
            return self.error(400, "The idempotency key must be between 10 and 1024 characters.")
        problem = _invalid(form, self._platform(request))
        if problem is not None:
            return self.error(400, problem)

        now = self.clock()
        test = form.get("test", "").lower() in ("true", "1")
        piece_id = "0" if test and self.zero_test_ids else self._new_piece_id()
        answer = {"success": True, "data": _created(piece_id, form, test, now)}
        if key is not None:
            fingerprint = f"{key}:{hashlib.sha256(raw).hexdigest()}"
            record = {"created_at": now, "answer": answer}
            stored, is_new = self.store.insert_if_absent(self.keys, fingerprint, record)
            if not is_new:
                if now - stored["created_at"] < IDEMPOTENCY_WINDOW_SECONDS:
                    return json_response(409, stored["answer"])
                self.store.put(self.keys, fingerprint, record)
        if piece_id != "0":
            self._keep(piece_id, form, test, now)
        return json_response(200, answer)

    def retrieve(self, request: httpx.Request, piece_id: str) -> httpx.Response:
        doc = self.piece(piece_id)
        if doc is None:
            return self.error(404, "Mailpiece not found.")
        return json_response(200, {"success": True, "data": self._render(doc, self.clock())})

    def cancel(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.read().decode("utf-8"), keep_blank_values=True))
        piece_id = form.get("id", "")
        doc = self.piece(piece_id)
        if doc is None:
            return self.error(404, "Mailpiece not found.")
        now = self.clock()
        if not doc.get("cancelled"):
            if stage_at(doc["stages"], now) != CREATED:
                return self.error(
                    400, "This mailpiece is already being processed and cannot be cancelled."
                )
            doc["cancelled"] = True
            unreached = [s for s in doc["stages"] if s[1] > now]
            doc["stages"] = [s for s in doc["stages"] if s[1] <= now]
            self.store.put(self.pieces, piece_id, doc)
            self.forgive(piece_id, unreached)
            self.owe(piece_id, "cancelled", now, self._webhook_piece(doc, "cancelled", now))
        return json_response(200, {"success": True, "data": 1})

    def report(
        self,
        request: httpx.Request,
        start: str,
        end: str,
        status: str | None = None,
        tag: str | None = None,
    ) -> httpx.Response:
        try:
            first, last = date.fromisoformat(start), date.fromisoformat(end)
        except ValueError:
            return self.error(400, "Dates must be in YYYY-MM-DD format.")
        wanted = ALIASES.get(status or "", status) if status not in (None, "", "all") else None
        now = self.clock()
        singles = []
        for _key, doc in self.scan(self.pieces):
            day = datetime.fromtimestamp(doc["created_at"], tz=UTC).date()
            shown = self._render(doc, now)
            if not first <= day <= last or (wanted and shown["status"] != wanted):
                continue
            if tag and tag not in shown["tags"].split(","):
                continue
            singles.append(shown)
        return json_response(200, {"success": True, "data": {"singles": singles}})

    # -- pieces ---------------------------------------------------------------------------
    def _new_piece_id(self) -> str:
        while True:
            candidate = str(random.randint(10_000_000, 99_999_999))
            if self.piece(candidate) is None:
                return candidate

    def _keep(self, piece_id: str, form: dict[str, str], test: bool, now: float) -> None:
        stages = self.timeline.stages(piece_id, now, test=test)
        doc = {"id": piece_id, "form": form, "test": test, "created_at": now, "stages": stages}
        self.store.put(self.pieces, piece_id, doc)
        self.schedule(
            piece_id,
            stages,
            lambda stage, at: self._webhook_piece(doc, self.stage_events[stage], at),
        )

    def _render(self, doc: dict[str, Any], now: float) -> dict[str, Any]:
        """The mailpiece object with its status in the reporting spelling."""
        form = doc["form"]
        stage = CANCELLED if doc.get("cancelled") else stage_at(doc["stages"], now)
        # A test piece stays "test" at Stannp; it only travels when the timeline says so.
        frozen = doc["test"] and not self.timeline.test_pieces_progress
        piece_id = doc["id"]
        return {
            "id": piece_id,
            "timestamp": _stannp_time(doc["created_at"]),
            "status": "test" if frozen else REPORTING_STATUS[stage],
            "type": "postcard",
            "format": form.get("size", "A6"),
            "pdf_file": f"https://api-eu1.stannp.com/v1/storage/get/{piece_id}.pdf",
            "dispatched": _dispatched(doc["stages"], now),
            "country": form.get("recipient[country]", "GB"),
            "cost": _cost(form),
            "addons": form.get("addons", ""),
            "tags": form.get("tags", ""),
            "postcode": form.get("recipient[postcode]", ""),
            "address": ", ".join(
                form[k]
                for k in ("recipient[address1]", "recipient[city]", "recipient[postcode]")
                if form.get(k)
            ),
        }

    def event_extras(self) -> dict[str, Any]:
        return {"webhook_id": self.webhook_id}

    def _webhook_piece(self, doc: dict[str, Any], status: str, at: float) -> dict[str, Any]:
        form = doc["form"]
        return {
            "id": int(doc["id"]),
            "status": status,
            "type": "postcard",
            "format": form.get("size", "A6"),
            "tags": form.get("tags", ""),
            "country": form.get("recipient[country]", "GB"),
            "postcode": form.get("recipient[postcode]", ""),
            "tracking_reference": None,
            "dispatched": _dispatched(doc["stages"], at),
            "updated": _stannp_time(at),
        }


def render_webhooks(
    due: list[tuple[str, dict[str, Any]]], now: float
) -> list[tuple[WebhookEnvelope, list[str]]]:
    """``mailpiece_status`` calls of at most 50 pieces that changed to the same status.

    One call never carries two statuses of one piece, and calls go out in the order the
    statuses happened.
    """
    batches: dict[tuple[str, int, str], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for key, event in due:
        batches[(event["secret"], event.get("webhook_id", 0), event["event"])].append((key, event))
    calls = []
    for (secret, webhook_id, _status), group in batches.items():
        for i in range(0, len(group), WEBHOOK_CHUNK):
            chunk = group[i : i + WEBHOOK_CHUNK]
            body = json.dumps(
                {
                    "webhook_id": webhook_id,
                    "event": "mailpiece_status",
                    "created": _stannp_time(now),
                    "retries": 0,
                    "mailpieces": [event["payload"] for _key, event in chunk],
                }
            )
            headers = {
                "Content-Type": "application/json",
                "X-Stannp-Signature": stannp_signature(secret, body),
            }
            envelope = WebhookEnvelope("stannp", headers, body, received_at=iso_utc(now))
            calls.append((envelope, [key for key, _event in chunk]))
    return calls


def _invalid(form: dict[str, str], platform: str) -> str | None:
    """Why Stannp would refuse this postcard, or ``None``."""
    if not form.get("recipient[address1]"):
        return "The recipient's address1 is required."
    if not (form.get("recipient[postcode]") or form.get("recipient[zipcode]")):
        return "The recipient's postcode is required."
    if not any(form.get(f"recipient[{k}]") for k in ("firstname", "lastname", "company")):
        return "The recipient needs a name or a company."
    if not form.get("template") and not form.get("front"):
        return "A front image is required when no template is given."
    sizes = sorted(set(SIZES[platform].values()))
    if form.get("size", sizes[0]) not in sizes:
        return f"Size {form.get('size')} is not available; choose one of {', '.join(sizes)}."
    unknown = [a for a in form.get("addons", "").split(",") if a and a not in ADDONS]
    if unknown:
        return f"Unknown addon {unknown[0]}."
    return None


def _created(piece_id: str, form: dict[str, str], test: bool, now: float) -> dict[str, Any]:
    size = form.get("size", "A6")
    data: dict[str, Any] = {
        "pdf": f"https://api-eu1.stannp.com/v1/storage/get/{piece_id}-{size.lower()}.pdf",
        "id": piece_id,
        "created": iso_utc(now).replace("Z", "+00:00"),
        "format": size,
        "cost": _cost(form),
        "status": "test" if test else "received",
    }
    if not test:
        data.update(
            type="postcard",
            firstname=form.get("recipient[firstname]", ""),
            lastname=form.get("recipient[lastname]", ""),
            address1=form.get("recipient[address1]", ""),
            city=form.get("recipient[city]", ""),
            postcode=form.get("recipient[postcode]", ""),
            country=form.get("recipient[country]", ""),
            addons=form.get("addons", ""),
            tags=form.get("tags", ""),
            dispatched=None,
        )
    return data


def _cost(form: dict[str, str]) -> str:
    price = Decimal(PRICES.get(form.get("size", "A6"), "0.62"))
    if "FIRST_CLASS" in form.get("addons", "").split(","):
        price += FIRST_CLASS_SURCHARGE
    return f"{price:.2f}"


def _dispatched(stages: list[list[Any]], now: float) -> str | None:
    for stage, at in stages:
        if stage == MAILED and at <= now:
            return _stannp_time(at)
    return None
