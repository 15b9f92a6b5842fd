"""IntelliPrint (hybrid mail, Royal Mail) over raw httpx.

IntelliPrint has **no idempotency header**. Its print jobs carry a free ``reference`` that can
be listed by exact match (``GET /prints?reference=...``), so the idempotency key becomes the
reference and every create is *check, then create*:

1. list prints with this reference (test and live jobs are listed separately, so the lookup
   asks in the request's mode); if one exists, return it;
2. otherwise ``POST /prints`` exactly once, with **no transport-level retry**: a POST whose
   answer was lost may have created the job, so the retry loop lives here and starts again at
   step 1. After a lost answer the lookup finds the job instead of creating a second one.

The window this leaves open - two processes creating for the same key at the same instant -
is closed one level up: the mailing service claims a recipient for exactly one batch.

Request shape (from IntelliPrint's SDK documentation): ``type: postcard``, ``testmode``,
``confirmed: true`` (submit for printing), ``recipients[].address{name, line, postcode,
country}``, ``postage{service, ideal_envelope}``, ``metadata``. The artwork goes as two-page
``content`` HTML (front image, page break, back image) since the API takes a two-page
document, not separate front/back URLs. Costs are integers in 1e-8 GBP. IntelliPrint posts
with Royal Mail: ``uk_first_class``/``uk_second_class`` at home, ``international`` otherwise.

Webhooks are Standard Webhooks (Svix) ``letter.updated`` events. Royal Mail reports no
delivery for untracked post, so the last good status is ``sent`` (mapped to ``in_transit``):
an IntelliPrint piece never reaches ``delivered``.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from mail_pipeline.domain.mailpieces import MailpieceStatus as S
from mail_pipeline.domain.mailpieces import PrintedPiece
from mail_pipeline.integrations.circuit import CircuitOpen
from mail_pipeline.integrations.errors import (
    IntegrationError,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import NO_RETRY, HttpApi, RetryPolicy, default_error
from mail_pipeline.integrations.printers.base import (
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
    header,
    id_text,
    parse_timestamp,
    response_json,
    shown,
    webhook_json,
)
from mail_pipeline.integrations.printers.signing import (
    DEFAULT_TOLERANCE_SECONDS,
    ingress_time,
    verify_svix,
)
from mail_pipeline.integrations.ratelimit import Limiter

log = logging.getLogger(__name__)

INTELLIPRINT_BASE_URL = "https://api.intelliprint.net/v1"
#: 100 requests per minute per account; lookups count as much as creates.
INTELLIPRINT_RATE_LIMIT = (100, 60.0)
ENVELOPES = {
    "A6": "postcard_a6",
    "4x6": "postcard_a6",
    "A5": "postcard_a5",
    "A5-ENV": "postcard_a5_enveloped",
}
#: One unit of IntelliPrint money is 1e-8 GBP; a penny is 1e6 units.
UNITS_PER_PENNY = 1_000_000

STATUSES: Mapping[str, S] = {
    "waiting_to_print": S.CREATED,
    "printing": S.IN_PRODUCTION,
    "enclosing": S.IN_PRODUCTION,
    "shipping": S.MAILED,
    "sent": S.IN_TRANSIT,
    "returned": S.RETURNED,
    "failed_wrong_address": S.FAILED,
    "cancelled": S.CANCELLED,
}


def intelliprint_error(response: httpx.Response) -> IntegrationError:
    """The typed error for ``{"error": {"type", "code", "message", "param"}}``."""
    body = error_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        code = error.get("code") or error.get("type")
        message = str(error["message"])
        if error.get("param"):
            message += f" (parameter {error['param']})"
        return default_error("intelliprint", response, message, str(code) if code else None)
    return default_error("intelliprint", response, response.text[:300] or response.reason_phrase)


def postcard_content(front_url: str, back_url: str) -> str:
    """Two pages of HTML: the front image, then the back image."""
    page = '<img src="{}" style="width:100%;height:100%;object-fit:cover">'
    return (
        page.format(html.escape(front_url, quote=True))
        + '<div style="page-break-after:always"></div>'
        + page.format(html.escape(back_url, quote=True))
    )


def print_body(request: PostcardRequest) -> dict[str, Any]:
    """The JSON body of ``POST /prints`` for one postcard to one recipient."""
    envelope = ENVELOPES.get(request.size)
    if envelope is None:
        raise RequestRejected("intelliprint", f"IntelliPrint has no postcard size {request.size!r}")
    if request.postage not in ("first_class", "standard"):
        raise RequestRejected("intelliprint", f"unknown postage {request.postage!r}")
    to = request.to
    if to.country == "GB":
        service = "uk_first_class" if request.postage == "first_class" else "uk_second_class"
    else:
        service = "international"
    line = ", ".join(part for part in (to.line1, to.line2, to.city, to.region) if part)
    return {
        "type": "postcard",
        "testmode": request.test_mode,
        "confirmed": True,
        "reference": request.idempotency_key,
        "content": postcard_content(request.front_url, request.back_url),
        "recipients": [
            {
                "address": {
                    "name": to.name,
                    "line": line,
                    "postcode": to.postal_code,
                    "country": to.country,
                }
            }
        ],
        "postage": {"service": service, "ideal_envelope": envelope},
        "metadata": {
            "recipient_id": str(request.recipient_id),
            "campaign_id": str(request.campaign_id),
            "organization_id": str(request.organization_id),
        },
    }


def piece_from_print(job: Mapping[str, Any]) -> PrintedPiece:
    if not job.get("id"):
        raise RequestRejected("intelliprint", "the answer carries no print id")
    letters = [x for x in job.get("letters") or [] if isinstance(x, dict)]
    status = S.CREATED
    if job.get("deleted"):
        status = S.CANCELLED
    elif letters:
        status = STATUSES.get(str(letters[0].get("status")), S.CREATED)
    cost = job.get("cost")
    amount = cost.get("amount") if isinstance(cost, dict) else None
    return PrintedPiece(
        printer="intelliprint",
        provider_piece_id=str(job["id"]),
        status=status,
        cost_minor=int(amount) // UNITS_PER_PENNY if isinstance(amount, int | float) else None,
        currency="GBP" if amount is not None else None,
        raw=dict(job),
    )


class IntelliPrintPrinter(Printer):
    name = "intelliprint"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = INTELLIPRINT_BASE_URL,
        webhook_secret: str | None = None,
        webhook_tolerance: float = DEFAULT_TOLERANCE_SECONDS,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: tuple[int, float] | None = INTELLIPRINT_RATE_LIMIT,
        limit_fraction: float = DEFAULT_LIMIT_FRACTION,
        limiter: Limiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``webhook_secret`` is the ``whsec_...`` signing secret; ``None`` skips checks."""
        self.retry = retry or RetryPolicy()
        self.webhook_secret = webhook_secret
        self.webhook_tolerance = webhook_tolerance
        self.sleep = sleep
        self.clock = clock
        self.limiter = build_limiter(limiter, rate_limit, limit_fraction)

        def api(policy: RetryPolicy) -> HttpApi:
            return HttpApi(
                vendor="intelliprint",
                base_url=base_url,
                headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
                retry=policy,
                transport=transport,
                limiter=self.limiter,
                error_mapper=intelliprint_error,
                sleep=sleep,
            )

        self._api = api(self.retry)
        #: Creates are never retried blindly: see the module docstring.
        self._create = api(NO_RETRY)

    def create_postcard(self, request: PostcardRequest) -> PrintedPiece:
        """Check by reference, then create; after a failed attempt, check again first."""
        body = print_body(request)
        last_error: IntegrationError | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            existing = self._by_reference(request.idempotency_key, testmode=request.test_mode)
            if existing is not None:
                return piece_from_print(existing)
            try:
                response = self._create.request("POST", "/prints", json=body)
            except CircuitOpen:
                raise  # the vendor is down: nothing was sent, and waiting here helps nobody
            except (VendorUnavailable, RateLimited) as exc:
                last_error = exc
                wait = exc.retry_after if isinstance(exc, RateLimited) else None
                if attempt == self.retry.max_attempts or (
                    wait is not None and wait > self.retry.max_retry_after
                ):
                    break
                self.sleep(wait if wait is not None else self.retry.backoff(attempt))
                continue
            return piece_from_print(response_json("intelliprint", response))
        assert last_error is not None
        raise last_error

    def find_postcard(self, idempotency_key: str, recipient_id: int) -> PrintedPiece | None:
        """The print job with this reference, live or test, for this recipient."""
        for testmode in (False, True):
            job = self._by_reference(idempotency_key, testmode=testmode)
            if job is None:
                continue
            owner = (job.get("metadata") or {}).get("recipient_id")
            if owner not in (None, str(recipient_id)):
                log.warning(
                    "intelliprint print %s has reference %s but recipient %s",
                    job.get("id"),
                    idempotency_key,
                    owner,
                )
                continue
            return piece_from_print(job)
        return None

    def cancel_postcard(self, provider_piece_id: str) -> None:
        """``DELETE /prints/{id}`` cancels a confirmed job that has not been printed yet."""
        self._api.request("DELETE", f"/prints/{quote(provider_piece_id, safe='')}")

    def parse_webhook(self, envelope: WebhookEnvelope) -> list[StatusUpdate]:
        """The status in a ``letter.updated`` event (``[]`` for other events or statuses).

        The event id is the ``svix-id`` header, else ``intelliprint:<letter id>:<status>``;
        the time is the ``svix-timestamp`` header, else the ingress's ``received_at``; the
        detail is ``returned.reason``, which must be text when present."""
        if self.webhook_secret:
            verify_svix(
                "intelliprint",
                self.webhook_secret,
                envelope.headers,
                envelope.body,
                now=ingress_time(envelope.received_at, self.clock),
                tolerance=self.webhook_tolerance,
            )
        payload = webhook_json("intelliprint", envelope.body)
        data = payload["data"] if isinstance(payload.get("data"), dict) else payload
        event_type = payload.get("type") or data.get("type")
        if event_type != "letter.updated":
            log.debug("intelliprint %s event is not a letter status; ignored", shown(event_type))
            return []
        raw = data.get("status", "")
        raw_status = raw if isinstance(raw, str) else ""
        status = STATUSES.get(raw_status)
        if status is None:
            log.warning(
                "intelliprint letter %s has unknown status %s; ignored",
                shown(data.get("id")),
                shown(raw),
            )
            return []
        print_id = id_text(data.get("print_id"), what="intelliprint letter.updated print_id")
        event_id = header(envelope.headers, "svix-id")
        if not event_id:
            letter = id_text(data.get("id"), what="intelliprint letter.updated id")
            event_id = f"intelliprint:{letter}:{raw_status}"
        sent = header(envelope.headers, "svix-timestamp") or ""
        digits = sent.replace(".", "", 1)
        when: Any = float(sent) if digits.isascii() and digits.isdigit() else None
        returned = data.get("returned") if isinstance(data.get("returned"), dict) else None
        return [
            StatusUpdate(
                printer=self.name,
                provider_piece_id=print_id,
                provider_event_id=event_id,
                status=status,
                occurred_at=parse_timestamp(
                    when or envelope.received_at, what="intelliprint event time"
                ),
                detail=detail_text(
                    returned.get("reason") if returned else None,
                    what="intelliprint returned.reason",
                ),
                provider_status=raw_status,
            )
        ]

    def close(self) -> None:
        self._api.close()
        self._create.close()

    def _by_reference(self, reference: str, *, testmode: bool) -> dict[str, Any] | None:
        response = self._api.request(
            "GET",
            "/prints",
            params={
                "reference": reference,
                "testmode": "true" if testmode else "false",
                "limit": 10,
            },
        )
        jobs = [
            job
            for job in response_json("intelliprint", response).get("data") or []
            if isinstance(job, dict) and job.get("reference") == reference
        ]
        # Oldest first: should two ever exist, every caller settles on the same one.
        jobs.sort(key=lambda job: (job.get("created") or 0, str(job.get("id"))))
        return jobs[0] if jobs else None
