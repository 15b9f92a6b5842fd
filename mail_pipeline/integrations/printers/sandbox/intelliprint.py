"""IntelliPrint's stand-in: print jobs, listing by reference, and Svix-signed webhooks.

Imitated: ``Authorization: Bearer <key>`` (401 ``authentication_error`` otherwise); errors as
``{"error": {"type", "code", "message", "param"}}``; ``POST /v1/prints`` validated like the
API (recipients with ``address{name, line, postcode, country}``, one of ``file``/``content``/
``template``, postage service and postcard envelope); **no idempotency at all** - every POST
makes a new print job, whatever its ``reference``, which is exactly why the client checks the
reference first; ``GET /v1/prints?reference=&testmode=`` (test and live jobs listed
separately, newest first); ``DELETE /v1/prints/{id}`` until printing starts; 429
``rate_limited`` with ``Retry-After`` (an assumption: the header IntelliPrint sends is not
documented); ``letter.updated`` webhooks signed the Standard Webhooks way (``svix-id``,
``svix-timestamp``, ``svix-signature: v1,<base64>``) with a ``whsec_`` secret.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import httpx

from mail_pipeline.integrations.printers.base import WebhookEnvelope
from mail_pipeline.integrations.printers.common import iso_utc
from mail_pipeline.integrations.printers.intelliprint import ENVELOPES, UNITS_PER_PENNY
from mail_pipeline.integrations.printers.sandbox.base import (
    CANCELLED,
    CREATED,
    DELIVERED,
    IN_LOCAL_AREA,
    IN_PRODUCTION,
    IN_TRANSIT,
    MAILED,
    RETURNED,
    PrinterSandbox,
    new_id,
    stage_at,
)
from mail_pipeline.integrations.printers.signing import svix_signature
from mail_pipeline.integrations.sandbox.transport import atomic, json_response

#: Stage -> letter status.
LETTER_STATUS = {
    CREATED: "waiting_to_print",
    IN_PRODUCTION: "printing",
    MAILED: "shipping",
    IN_TRANSIT: "sent",
    IN_LOCAL_AREA: "sent",
    DELIVERED: "sent",
    RETURNED: "returned",
    CANCELLED: "cancelled",
}
SERVICES = {
    "uk_first_class",
    "uk_second_class",
    "uk_first_class_signed_for",
    "uk_second_class_signed_for",
    "uk_special_delivery_9am",
    "uk_special_delivery",
    "international",
    "tracked_24",
    "tracked_48",
}
#: Postcard price before tax, pence by postage service.
PRICES_PENCE = {"uk_first_class": 89, "uk_second_class": 69, "international": 185}
ERROR_TYPES = {
    401: "authentication_error",
    403: "authentication_error",
    402: "payment_error",
    429: "rate_limited",
}


class IntelliPrintSandbox(PrinterSandbox):
    vendor = "intelliprint"
    routes: ClassVar[list[tuple[str, str, str]]] = [
        ("POST", r"/v1/prints", "create"),
        ("GET", r"/v1/prints", "list_prints"),
        ("GET", r"/v1/prints/(?P<print_id>[^/]+)", "retrieve"),
        ("DELETE", r"/v1/prints/(?P<print_id>[^/]+)", "cancel"),
    ]
    #: Royal Mail reports no delivery: the last good status is ``sent``.
    stage_events = {
        IN_PRODUCTION: "printing",
        MAILED: "shipping",
        IN_TRANSIT: "sent",
        RETURNED: "returned",
    }
    event_id_prefix = "msg_"
    default_api_key = "sandbox-intelliprint-key"
    #: ``whsec_`` + base64("intelliprint-sandbox-secret").
    default_webhook_secret = "whsec_aW50ZWxsaXByaW50LXNhbmRib3gtc2VjcmV0"

    # -- the vendor's answers -------------------------------------------------------------
    def error(self, status: int, message: str, code: str | None = None) -> httpx.Response:
        fallback = "internal_error" if status >= 500 else "invalid_request_error"
        kind = ERROR_TYPES.get(status, fallback)
        param = None
        if code and code.startswith("param:"):
            param, code = code[len("param:") :], "invalid_parameter"
        return json_response(
            status, {"error": {"type": kind, "code": code, "message": message, "param": param}}
        )

    def rate_limited(self, retry_after: float) -> httpx.Response:
        return json_response(
            429,
            {
                "error": {
                    "type": "rate_limited",
                    "code": "rate_limited",
                    "message": "Too many requests. Please slow down.",
                    "param": None,
                }
            },
            {"Retry-After": str(math.ceil(retry_after))},
        )

    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            return self.error(401, "Invalid API key provided.", "invalid_api_key")
        return None

    # -- routes ---------------------------------------------------------------------------
    @atomic
    def create(self, request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.read() or b"null")
        except ValueError:
            return self.error(400, "The request body could not be parsed as JSON.")
        if not isinstance(body, dict):
            return self.error(400, "The request body must be an object.")
        problem = _invalid(body)
        if problem is not None:
            return self.error(400, problem[0], f"param:{problem[1]}")

        now = self.clock()
        print_id = new_id("print_")
        job = _print(print_id, body, now)
        reference = job.get("reference")
        if reference:
            self._index(job["testmode"], reference, print_id)
        stages = (
            self.timeline.stages(print_id, now, test=job["testmode"])
            if job["confirmed"]
            else [[CREATED, now]]
        )
        self.store.put(self.pieces, print_id, {"print": job, "created_at": now, "stages": stages})
        self.schedule(print_id, stages, lambda stage, at: _letter_event(job, stage, at))
        return json_response(200, self._render({"print": job, "stages": stages}, now))

    def list_prints(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        try:
            limit, skip = int(params.get("limit", "10")), int(params.get("skip", "0"))
        except ValueError:
            return self.error(400, "limit and skip must be integers.")
        if not 1 <= limit <= 1000 or skip < 0:
            return self.error(400, "limit must be from 1 to 1000 and skip at least 0.")
        testmode = params.get("testmode", "false").lower() == "true"
        now = self.clock()
        reference = params.get("reference")
        if reference is not None:
            docs = [self.piece(pid) for pid in self._referenced(testmode, reference)]
            jobs = [self._render(d, now) for d in docs if d is not None]
        else:
            jobs = [
                self._render(doc, now)
                for _key, doc in self.scan(self.pieces)
                if doc["print"]["testmode"] == testmode
            ]
        if params.get("type"):
            jobs = [j for j in jobs if j["type"] == params["type"]]
        jobs = [j for j in jobs if not j.get("deleted")]
        jobs.sort(key=lambda j: j["created"], reverse=True)
        page = jobs[skip : skip + limit]
        return json_response(
            200, {"object": "list", "data": page, "has_more": skip + limit < len(jobs)}
        )

    def retrieve(self, request: httpx.Request, print_id: str) -> httpx.Response:
        doc = self.piece(print_id)
        if doc is None:
            return self.error(404, f"No print job with id {print_id}.", "resource_missing")
        return json_response(200, self._render(doc, self.clock()))

    def cancel(self, request: httpx.Request, print_id: str) -> httpx.Response:
        doc = self.piece(print_id)
        if doc is None:
            return self.error(404, f"No print job with id {print_id}.", "resource_missing")
        now = self.clock()
        if not doc.get("deleted"):
            if stage_at(doc["stages"], now) != CREATED:
                return self.error(
                    400,
                    "This print job has started printing and can no longer be cancelled.",
                    "print_not_cancellable",
                )
            doc["deleted"] = True
            unreached = [s for s in doc["stages"] if s[1] > now]
            doc["stages"] = [s for s in doc["stages"] if s[1] <= now]
            self.store.put(self.pieces, print_id, doc)
            self.forgive(print_id, unreached)
        return json_response(200, {**self._render(doc, now), "deleted": True})

    # -- references: several print jobs may share one (no idempotency) ---------------------
    def _index(self, testmode: bool, reference: str, print_id: str) -> None:
        n = 0
        while not self.store.insert_if_absent(
            self.keys, f"{'test' if testmode else 'live'}:{reference}#{n}", {"print_id": print_id}
        )[1]:
            n += 1

    def _referenced(self, testmode: bool, reference: str) -> list[str]:
        found: list[str] = []
        n = 0
        while True:
            doc = self.store.get(self.keys, f"{'test' if testmode else 'live'}:{reference}#{n}")
            if doc is None:
                return found
            found.append(doc["print_id"])
            n += 1

    def prints_with_reference(self, reference: str, *, testmode: bool = True) -> list[str]:
        """Every print job made with this reference (more than one means a duplicate)."""
        return self._referenced(testmode, reference)

    def _render(self, doc: dict[str, Any], now: float) -> dict[str, Any]:
        job = doc["print"]
        stage = CANCELLED if doc.get("deleted") else stage_at(doc["stages"], now)
        letters = [{**letter, "status": LETTER_STATUS[stage]} for letter in job["letters"]]
        if stage == RETURNED:
            for letter in letters:
                letter["returned"] = {"date": int(now), "reason": "Addressee gone away"}
        shown = {**job, "letters": letters}
        if doc.get("deleted"):
            shown["deleted"] = True
        return shown


def render_webhooks(
    due: list[tuple[str, dict[str, Any]]], now: float
) -> list[tuple[WebhookEnvelope, list[str]]]:
    """One ``letter.updated`` message per status, signed the Standard Webhooks way."""
    calls = []
    for key, event in due:
        body = json.dumps(event["payload"])
        timestamp = str(int(now))
        headers = {
            "Content-Type": "application/json",
            "svix-id": event["event_id"],
            "svix-timestamp": timestamp,
            "svix-signature": svix_signature(event["secret"], event["event_id"], timestamp, body),
        }
        envelope = WebhookEnvelope("intelliprint", headers, body, received_at=iso_utc(now))
        calls.append((envelope, [key]))
    return calls


def _invalid(body: dict[str, Any]) -> tuple[str, str] | None:
    """``(message, parameter)`` when IntelliPrint would refuse this print job."""
    kind = body.get("type", "letter")
    if kind not in ("letter", "postcard"):
        return "type must be letter or postcard.", "type"
    if not any(body.get(k) for k in ("file", "content", "template")):
        return "Provide one of file, content or template.", "content"
    recipients = body.get("recipients")
    if not body.get("mailing_list"):
        if not isinstance(recipients, list) or not recipients:
            return "Provide recipients or a mailing_list.", "recipients"
        for i, recipient in enumerate(recipients):
            address = recipient.get("address") if isinstance(recipient, dict) else None
            if not isinstance(address, dict):
                return f"recipients[{i}].address is required.", f"recipients[{i}].address"
            for field in ("name", "line"):
                if not address.get(field):
                    return f"recipients[{i}].address.{field} is required.", (
                        f"recipients[{i}].address.{field}"
                    )
            if not (address.get("postcode") or address.get("postal_code")):
                return f"recipients[{i}].address.postcode is required.", (
                    f"recipients[{i}].address.postcode"
                )
    postage = body.get("postage") or {}
    if postage.get("service", "uk_second_class") not in SERVICES:
        return f"Unknown postage service {postage.get('service')}.", "postage.service"
    envelope = postage.get("ideal_envelope")
    if kind == "postcard" and envelope is not None and envelope not in set(ENVELOPES.values()):
        return f"Unknown postcard envelope {envelope}.", "postage.ideal_envelope"
    return None


def _print(print_id: str, body: dict[str, Any], now: float) -> dict[str, Any]:
    postage = body.get("postage") or {}
    service = postage.get("service", "uk_second_class")
    kind = body.get("type", "letter")
    confirmed = bool(body.get("confirmed", False))
    letters = [
        {
            "id": new_id("ltr_"),
            "address": recipient["address"],
            "postage_service": service,
            "returned": None,
        }
        for recipient in body.get("recipients") or []
    ]
    pence = PRICES_PENCE.get(service, PRICES_PENCE["uk_second_class"]) * len(letters)
    return {
        "id": print_id,
        "object": "print",
        "created": int(now),
        "type": kind,
        "testmode": bool(body.get("testmode", False)),
        "confirmed": confirmed,
        "confirmed_at": int(now) if confirmed else None,
        "reference": body.get("reference"),
        "metadata": body.get("metadata") or {},
        "pages": 2 if kind == "postcard" else 1,
        "sheets": 1,
        "postage": {
            "service": service,
            "ideal_envelope": postage.get("ideal_envelope")
            or ("postcard_a6" if kind == "postcard" else "c5"),
            "mail_date": postage.get("mail_date"),
        },
        "cost": {
            "amount": pence * UNITS_PER_PENNY,
            "after_tax": pence * UNITS_PER_PENNY * 6 // 5,
            "currency": "GBP",
        },
        "letters": letters,
    }


def _letter_event(job: dict[str, Any], stage: str, at: float) -> dict[str, Any]:
    letter = job["letters"][0] if job["letters"] else {"id": new_id("ltr_")}
    event: dict[str, Any] = {
        "id": letter["id"],
        "print_id": job["id"],
        "status": LETTER_STATUS[stage],
        "postage_service": job["postage"]["service"],
        "testmode": job["testmode"],
        "type": "letter.updated",
    }
    if stage == RETURNED:
        event["returned"] = {"date": int(at), "reason": "Addressee gone away"}
    return event
