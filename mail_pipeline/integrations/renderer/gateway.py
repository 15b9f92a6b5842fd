"""Client for the internal rendering gateway (the service in front of the Figma-plugin renderer).

The gateway's documented API (v1):

``POST {base}/v1/renders``
    Headers: ``Authorization: Bearer <token>``, ``Idempotency-Key: <key>`` (optional; the same
    key within 24 h returns the same render job instead of starting another one; the same key
    with a different body is ``409 idempotency_key_reused``).
    Body: ``{"template": "<name>", "size": "4x6" | "A6", "reference": "<free text>",
    "fields": {...}}``. ``fields`` holds the personalized texts and colours
    (:meth:`~.models.PostcardContent.to_fields`) and the raw recipient fields
    (``first_name``, ``last_name``, ``city``, ``region``, ``postal_code``, ``country``), for
    templates that lay out their own address block. Two fields carry the offer:
    ``offer_code`` (the recipient's own code, printed as text; null for a card without one)
    and ``qr_url`` (the https link the template draws as a QR code - it carries the code;
    null: the template draws no QR and still prints the code).

    ``200 {"id": "rnd_...", "status": "completed", "width", "height",
    "front_png_base64", "back_png_base64"}`` when the render finished within the request;
    ``202 {"id": "rnd_...", "status": "queued", "poll_url": "/v1/renders/rnd_..."}`` with a
    ``Location`` header and ``Retry-After`` (seconds) when it is queued.

``GET {base}/v1/renders/{id}``
    ``200`` with ``status`` ``queued`` | ``rendering`` (plus ``Retry-After``), ``completed``
    (with both images, as above) or ``failed`` (with ``error``).

Errors: ``{"error": {"code": "...", "message": "..."}}`` with ``400 invalid_request``,
``401 unauthorized``, ``404 not_found``, ``409 idempotency_key_reused``,
``422 unknown_template`` / ``invalid_fields``, ``429 rate_limited`` (``Retry-After``),
``5xx`` (retried by :class:`~mail_pipeline.integrations.http.HttpApi`).

A render has no side effects; the idempotency key only saves the gateway duplicate work when
a response is lost and the request is retried.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from typing import Any

import httpx

from mail_pipeline.integrations.errors import IntegrationError, VendorUnavailable
from mail_pipeline.integrations.http import HttpApi, RetryPolicy, default_error, retry_after_seconds
from mail_pipeline.integrations.ratelimit import Limiter
from mail_pipeline.integrations.renderer.chain import Renderer
from mail_pipeline.integrations.renderer.models import PRINT_SIZES, ProofRequest, RenderedProof
from mail_pipeline.integrations.renderer.personalize import personalize
from mail_pipeline.integrations.renderer.png import UnusableImage, print_ready_png

VENDOR = "render_gateway"


def gateway_error(response: httpx.Response) -> IntegrationError:
    """The typed error for a gateway error body."""
    try:
        error = response.json().get("error") or {}
        message, code = str(error.get("message") or response.reason_phrase), error.get("code")
    except (ValueError, AttributeError):
        message, code = response.text[:300] or response.reason_phrase, None
    return default_error(VENDOR, response, message, code)


class GatewayRenderer(Renderer):
    """Renders through the gateway; polls a queued render until it completes or times out."""

    name = "gateway"

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        limiter: Limiter | None = None,
        timeout: httpx.Timeout | None = None,
        max_wait_seconds: float = 30.0,
        poll_interval: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = HttpApi(
            vendor=VENDOR,
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout or httpx.Timeout(30.0, connect=5.0),
            # The fallback chain is the main resilience; a short retry budget keeps a dead
            # gateway from holding a recipient for long.
            retry=retry or RetryPolicy(max_attempts=3, base_delay=0.25, max_delay=2.0),
            transport=transport,
            limiter=limiter,
            error_mapper=gateway_error,
            sleep=sleep,
        )
        self.max_wait_seconds = max_wait_seconds
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock

    def render(self, request: ProofRequest) -> RenderedProof:
        content = personalize(request)
        fields: dict[str, Any] = {
            **content.to_fields(),
            "first_name": request.first_name,
            "last_name": request.last_name,
            "city": request.city,
            "region": request.region,
            "postal_code": request.postal_code,
            "country": request.country,
        }
        body = {
            "template": content.template,
            "size": content.size,
            "reference": f"campaign-{request.campaign_id}/recipient-{request.recipient_id}",
            "fields": fields,
        }
        key = f"render-{request.campaign_id}-{request.recipient_id}-{request.fingerprint()}"
        response = self.api.request(
            "POST", "/v1/renders", json=body, headers={"Idempotency-Key": key}
        )
        doc = self._json(response)
        if response.status_code == 202 or doc.get("status") != "completed":
            doc = self._wait(doc, response)
        return self._proof(doc, request.size)

    def _wait(self, doc: dict[str, Any], response: httpx.Response) -> dict[str, Any]:
        render_id = str(doc.get("id") or "")
        poll_url = doc.get("poll_url") or response.headers.get("location")
        if not poll_url and render_id:
            poll_url = f"/v1/renders/{render_id}"
        if not poll_url:
            raise UnusableImage(VENDOR, "queued a render without saying where to poll it")
        deadline = self._clock() + self.max_wait_seconds
        while True:
            status = doc.get("status")
            if status == "completed":
                return doc
            if status == "failed":
                error = doc.get("error") or {}
                raise UnusableImage(
                    VENDOR,
                    f"render {render_id} failed: {error.get('message') or 'no reason given'}",
                    code=error.get("code"),
                )
            if status not in ("queued", "rendering"):
                raise UnusableImage(VENDOR, f"render {render_id} has unknown status {status!r}")
            wait = retry_after_seconds(response)
            wait = self.poll_interval if wait is None else min(wait, self.max_wait_seconds)
            if self._clock() + wait > deadline:
                raise VendorUnavailable(
                    VENDOR, f"render {render_id} not ready after {self.max_wait_seconds:.0f}s"
                )
            self._sleep(wait)
            response = self.api.request("GET", str(poll_url))
            doc = self._json(response)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            doc = response.json()
        except ValueError as exc:
            raise UnusableImage(VENDOR, "answered with a body that is not JSON") from exc
        if not isinstance(doc, dict):
            raise UnusableImage(VENDOR, "answered with JSON that is not an object")
        return doc

    def _proof(self, doc: dict[str, Any], size: str) -> RenderedProof:
        sides = []
        for key in ("front_png_base64", "back_png_base64"):
            encoded = doc.get(key)
            if not isinstance(encoded, str) or not encoded:
                raise UnusableImage(VENDOR, f"completed render {doc.get('id')} has no {key}")
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise UnusableImage(VENDOR, f"{key} is not base64") from exc
            sides.append(print_ready_png(VENDOR, data, size))
        width, height = PRINT_SIZES[size]
        return RenderedProof(sides[0], sides[1], width, height, self.name)
