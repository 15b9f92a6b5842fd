"""Client for Pixelixe's Image Automation API (legacy renderer, kept as a fallback).

Assumed API (Pixelixe's public v2 docs and examples; confirm against the account in use):

``POST https://studio.pixelixe.com/api/graphic/automation/v2`` with a JSON body
``{"api_key", "document_uid", "format": "json" | "image", "image_type": "png",
"custom_field", "modifications": [{"name", "type": "text", "text"} |
{"name", "type": "shape", "background-color"}]}``.

- ``format: "json"`` answers ``{"status": "success", "created_at", "uid", "custom_field",
  "image_url"}``; the image is then downloaded from ``image_url``.
- ``format: "image"`` answers the image bytes themselves (``Content-Type: image/png``).
- Errors answer ``{"status": "error", "message": "..."}`` (401 for a bad key, 404 for an unknown
  document, 400 for bad modifications; sometimes with HTTP 200, so the body is checked too).

A Pixelixe document is one side at one size, so a postcard is two calls, named by
:class:`PixelixeDocuments` per template and size. Both sides get a text layer ``offer_code``
(the recipient's code); the back also gets ``qr_url``, the https link its QR element must
encode (it carries the code; empty when the card has no QR). How a document turns that layer
into a QR code is the document's own affair (confirm with the account's templates).

Pixelixe has no idempotency: a retried call makes another image, which is harmless (nothing is
printed or billed per image here).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from mail_pipeline.integrations.errors import IntegrationError, RequestRejected
from mail_pipeline.integrations.http import HttpApi, RetryPolicy, default_error
from mail_pipeline.integrations.ratelimit import Limiter
from mail_pipeline.integrations.renderer.chain import Renderer
from mail_pipeline.integrations.renderer.models import (
    PRINT_SIZES,
    PostcardContent,
    ProofRequest,
    RenderedProof,
)
from mail_pipeline.integrations.renderer.personalize import personalize
from mail_pipeline.integrations.renderer.png import UnusableImage, print_ready_png

VENDOR = "pixelixe"
BASE_URL = "https://studio.pixelixe.com"
AUTOMATION_PATH = "/api/graphic/automation/v2"


@dataclass(frozen=True)
class PixelixeDocuments:
    """The Pixelixe documents (templates) for one design template at one size."""

    front: str
    back: str


def parse_documents(raw: str) -> dict[str, dict[str, PixelixeDocuments]]:
    """``{"template": {"4x6": {"front": "doc-uid", "back": "doc-uid"}}}`` as JSON."""
    parsed = json.loads(raw or "{}")
    return {
        template: {
            size: PixelixeDocuments(front=d["front"], back=d["back"]) for size, d in sizes.items()
        }
        for template, sizes in parsed.items()
    }


def pixelixe_error(response: httpx.Response) -> IntegrationError:
    try:
        body = response.json()
        message = str(body.get("message") or body.get("error") or response.reason_phrase)
    except (ValueError, AttributeError):
        message = response.text[:300] or response.reason_phrase
    return default_error(VENDOR, response, message)


def front_modifications(content: PostcardContent) -> list[dict[str, str]]:
    """The named layers of a front document, as Pixelixe modifications."""
    return [
        {"name": "brand_name", "type": "text", "text": content.brand_name},
        {"name": "headline", "type": "text", "text": content.headline},
        {"name": "body", "type": "text", "text": content.body},
        {"name": "offer_code", "type": "text", "text": content.offer_code or ""},
        {"name": "background", "type": "shape", "background-color": content.background_color},
        {"name": "accent", "type": "shape", "background-color": content.accent_color},
    ]


def back_modifications(content: PostcardContent) -> list[dict[str, str]]:
    """The named layers of a back document, as Pixelixe modifications."""
    return [
        {"name": "brand_name", "type": "text", "text": content.brand_name},
        {"name": "back_message", "type": "text", "text": content.back_message},
        {"name": "offer_code", "type": "text", "text": content.offer_code or ""},
        {"name": "qr_url", "type": "text", "text": content.qr_url or ""},
        {"name": "address_block", "type": "text", "text": "\n".join(content.address_block)},
        {"name": "background", "type": "shape", "background-color": content.background_color},
        {"name": "accent", "type": "shape", "background-color": content.accent_color},
    ]


class PixelixeRenderer(Renderer):
    name = "pixelixe"

    def __init__(
        self,
        api_key: str,
        documents: Mapping[str, Mapping[str, PixelixeDocuments]],
        *,
        response_format: Literal["json", "image"] = "json",
        base_url: str = BASE_URL,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        limiter: Limiter | None = None,
        timeout: httpx.Timeout | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``documents`` maps template name -> size -> the Pixelixe documents to use."""
        self.api_key = api_key
        self.documents = documents
        self.response_format = response_format
        self.api = HttpApi(
            vendor=VENDOR,
            base_url=base_url.rstrip("/"),
            timeout=timeout or httpx.Timeout(30.0, connect=5.0),
            retry=retry or RetryPolicy(max_attempts=3, base_delay=0.25, max_delay=2.0),
            transport=transport,
            limiter=limiter,
            error_mapper=pixelixe_error,
            sleep=sleep,
        )

    def render(self, request: ProofRequest) -> RenderedProof:
        content = personalize(request)
        docs = self.documents.get(content.template, {}).get(content.size)
        if docs is None:
            raise RequestRejected(
                VENDOR,
                f"no Pixelixe documents configured for template {content.template!r} "
                f"at size {content.size}",
            )
        reference = f"campaign-{request.campaign_id}/recipient-{request.recipient_id}"
        front = self._generate(docs.front, front_modifications(content), reference, content.size)
        back = self._generate(docs.back, back_modifications(content), reference, content.size)
        width, height = PRINT_SIZES[content.size]
        return RenderedProof(front, back, width, height, self.name)

    def _generate(
        self, document_uid: str, modifications: list[dict[str, str]], reference: str, size: str
    ) -> bytes:
        body = {
            "api_key": self.api_key,
            "document_uid": document_uid,
            "format": self.response_format,
            "image_type": "png",
            "custom_field": reference,
            "modifications": modifications,
        }
        response = self.api.request("POST", AUTOMATION_PATH, json=body)
        if response.headers.get("content-type", "").startswith("image/"):
            return print_ready_png(VENDOR, response.content, size)
        doc = self._json(response)
        if doc.get("status") != "success":
            raise RequestRejected(
                VENDOR,
                str(doc.get("message") or "the image was not generated"),
                status_code=response.status_code,
            )
        url = doc.get("image_url")
        if not isinstance(url, str) or not url:
            raise UnusableImage(VENDOR, "answered success without an image_url")
        image = self.api.request("GET", url, headers={"Accept": "image/png"})
        return print_ready_png(VENDOR, image.content, size)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            doc = response.json()
        except ValueError as exc:
            raise UnusableImage(VENDOR, "answered with neither an image nor JSON") from exc
        if not isinstance(doc, dict):
            raise UnusableImage(VENDOR, "answered with JSON that is not an object")
        return doc
