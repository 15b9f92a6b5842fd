"""Sandboxes for the rendering gateway and Pixelixe: they draw real postcards locally.

Both stand in for a remote renderer behind the real client code (``transport=``). They answer
with the documented shapes, status codes and error bodies of :mod:`.gateway` and
:mod:`.pixelixe`, and draw the images with the backup generator, so what comes back is a real
print-size PNG of the personalized card. The base :class:`SandboxTransport` adds latency,
5xx before processing, lost responses and 429s (:class:`SandboxBehaviour`).

State that outlives a request (gateway render jobs and idempotency keys, Pixelixe's hosted
images) lives in the :class:`SandboxStore`, so several processes can share a sandbox. Images
are not stored: rendering is deterministic, so they are drawn again when fetched.

By default the sandboxes draw in palette mode (``antialias=False``): the remote renderer's CPU
time is not ours to spend, and palette mode nearly halves the local cost of a proof. For
benchmarks the gateway can go further: ``prerendered=True`` answers every render of a size with
the same pair of images, drawn once (a stand-in card, not the recipient's), so the sandbox
costs what a remote renderer costs its caller: the latency and the bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from PIL import Image

from mail_pipeline.integrations.renderer.backup import draw_back, draw_front
from mail_pipeline.integrations.renderer.models import PRINT_SIZES, PostcardContent
from mail_pipeline.integrations.renderer.pixelixe import PixelixeDocuments
from mail_pipeline.integrations.renderer.png import encode_png
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import (
    SandboxBehaviour,
    SandboxTransport,
    json_response,
)

SANDBOX_GATEWAY_TOKEN = "sandbox-gateway-token"
SANDBOX_PIXELIXE_KEY = "sandbox-pixelixe-key"

#: The address each print size's pre-rendered card carries (domestic, so no country line).
_PRERENDERED_ADDRESS = {
    "4x6": ("Pat Sandbox", "1 Prerendered Way", "Portland OR 97205"),
    "A6": ("Pat Sandbox", "1 Prerendered Way", "London", "SW1A 1AA"),
}


def prerendered_content(size: str) -> PostcardContent:
    """The stand-in card a ``prerendered`` gateway answers for every render of ``size``."""
    return PostcardContent(
        size=size,
        template="classic",
        brand_name="Sandbox renderer",
        headline="A pre-rendered proof",
        body="The sandbox answers every render with this card.",
        offer_code=None,
        back_message="Drawn once; the recipient's own card is drawn by the real renderer.",
        background_color="#ffffff",
        accent_color="#1f6feb",
        address_block=_PRERENDERED_ADDRESS.get(size, _PRERENDERED_ADDRESS["4x6"]),
    )


def _json_body(request: httpx.Request) -> Any:
    try:
        return json.loads(request.read() or b"null")
    except ValueError:
        return None


class RenderingGatewaySandbox(SandboxTransport):
    """The rendering gateway's API (see :mod:`.gateway`), rendering with the backup generator.

    ``queue_seconds`` = 0 answers every render synchronously (200); above 0 a render is queued
    (202 + poll URL) and completes that many seconds (by ``clock``) after it was accepted.
    ``prerendered=True``: a completed render carries :func:`prerendered_content`'s images of
    its size, drawn on first use and kept (requests are still validated and recorded alike).
    """

    vendor = "render_gateway"
    routes = [
        ("POST", r"/v1/renders", "create_render"),
        ("GET", r"/v1/renders/(?P<render_id>[A-Za-z0-9_]+)", "get_render"),
    ]
    RENDERS = "render_gateway.renders"
    KEYS = "render_gateway.idempotency"

    def __init__(
        self,
        store: SandboxStore | None = None,
        behaviour: SandboxBehaviour | None = None,
        *,
        token: str = SANDBOX_GATEWAY_TOKEN,
        templates: Collection[str] | None = None,
        queue_seconds: float = 0.0,
        poll_after_seconds: float = 0.5,
        antialias: bool = False,
        prerendered: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store, behaviour, sleep=sleep, clock=clock)
        self.token = token
        self.templates = None if templates is None else frozenset(templates)
        self.queue_seconds = queue_seconds
        self.poll_after_seconds = poll_after_seconds
        self.antialias = antialias
        self.prerendered = prerendered
        #: size -> (front, back) as base64, for ``prerendered``.
        self._prerendered: dict[str, tuple[str, str]] = {}
        self._prerendering = threading.Lock()

    def rate_limited(self, retry_after: float) -> httpx.Response:
        return json_response(
            429,
            {"error": {"code": "rate_limited", "message": "too many render requests"}},
            {"retry-after": str(max(1, round(retry_after)))},
        )

    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self.error(401, "missing or invalid bearer token", "unauthorized")
        return None

    def create_render(self, request: httpx.Request) -> httpx.Response:
        body = _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
            return self.error(400, "body must be a JSON object with fields", "invalid_request")
        template, size = body.get("template"), body.get("size")
        if not isinstance(template, str) or size not in PRINT_SIZES:
            return self.error(400, "template and a known size are required", "invalid_request")
        if self.templates is not None and template not in self.templates:
            return self.error(422, f"unknown template {template!r}", "unknown_template")
        try:
            content = PostcardContent.from_fields(
                {**body["fields"], "size": size, "template": template}
            )
        except ValueError as exc:
            return self.error(422, str(exc), "invalid_fields")

        now = self.clock()
        job: dict[str, Any] = {
            "id": "rnd_" + uuid.uuid4().hex[:20],
            "fields": content.to_fields(),
            "created_at": now,
            "ready_at": now + self.queue_seconds,
        }
        key = request.headers.get("idempotency-key")
        if key:
            digest = hashlib.sha256(request.read()).hexdigest()
            self.store.put(self.RENDERS, job["id"], job)
            claim, new = self.store.insert_if_absent(
                self.KEYS, key, {"render_id": job["id"], "body_sha256": digest}
            )
            if not new:
                self.store.delete(self.RENDERS, job["id"])
                if claim["body_sha256"] != digest:
                    return self.error(
                        409,
                        "Idempotency-Key was used with a different body",
                        "idempotency_key_reused",
                    )
                job = self.store.get(self.RENDERS, claim["render_id"]) or job
        else:
            self.store.put(self.RENDERS, job["id"], job)
        if self.clock() >= job["ready_at"]:
            return self._completed(job)
        poll_url = f"/v1/renders/{job['id']}"
        return json_response(
            202,
            {"id": job["id"], "status": "queued", "poll_url": poll_url},
            {"location": poll_url, "retry-after": str(self.poll_after_seconds)},
        )

    def get_render(self, request: httpx.Request, render_id: str) -> httpx.Response:
        job = self.store.get(self.RENDERS, render_id)
        if job is None:
            return self.error(404, f"no render {render_id}", "not_found")
        if self.clock() >= job["ready_at"]:
            return self._completed(job)
        return json_response(
            200,
            {"id": render_id, "status": "rendering"},
            {"retry-after": str(self.poll_after_seconds)},
        )

    def _completed(self, job: Mapping[str, Any]) -> httpx.Response:
        content = PostcardContent.from_fields(job["fields"])
        width, height = PRINT_SIZES[content.size]
        front, back = self._sides(content)
        return json_response(
            200,
            {
                "id": job["id"],
                "status": "completed",
                "width": width,
                "height": height,
                "front_png_base64": front,
                "back_png_base64": back,
            },
        )

    def _sides(self, content: PostcardContent) -> tuple[str, str]:
        """Both sides as base64 PNG: drawn for ``content``, or the size's pre-rendered pair."""
        if not self.prerendered:
            return self._draw(content)
        with self._prerendering:
            sides = self._prerendered.get(content.size)
            if sides is None:
                sides = self._draw(prerendered_content(content.size))
                self._prerendered[content.size] = sides
        return sides

    def _draw(self, content: PostcardContent) -> tuple[str, str]:
        front = encode_png(draw_front(content, antialias=self.antialias))
        back = encode_png(draw_back(content, antialias=self.antialias))
        return base64.b64encode(front).decode(), base64.b64encode(back).decode()


#: The Pixelixe documents the sandbox resources and the sandbox server know (JSON, as
#: ``pixelixe.parse_documents`` reads it).
DEFAULT_PIXELIXE_DOCUMENTS = json.dumps(
    {
        "classic": {
            "4x6": {"front": "px-classic-4x6-front", "back": "px-classic-4x6-back"},
            "A6": {"front": "px-classic-a6-front", "back": "px-classic-a6-back"},
        }
    }
)


@dataclass(frozen=True)
class SandboxDocument:
    """A Pixelixe document as the sandbox knows it: which side, which size, at what scale
    (legacy documents were designed at 150 DPI: ``scale=0.5``)."""

    side: Literal["front", "back"]
    size: str
    scale: float = 1.0


def sandbox_documents(
    documents: Mapping[str, Mapping[str, PixelixeDocuments]], *, scale: float = 1.0
) -> dict[str, SandboxDocument]:
    """The sandbox's document registry for a client's ``documents`` configuration."""
    registry: dict[str, SandboxDocument] = {}
    for sizes in documents.values():
        for size, docs in sizes.items():
            registry[docs.front] = SandboxDocument("front", size, scale)
            registry[docs.back] = SandboxDocument("back", size, scale)
    return registry


_TEXT_LAYERS = (
    "brand_name",
    "headline",
    "body",
    "offer_code",
    "qr_url",
    "back_message",
    "address_block",
)
_SHAPE_LAYERS = {"background": "background_color", "accent": "accent_color"}


class PixelixeSandbox(SandboxTransport):
    """Pixelixe's Image Automation API (see :mod:`.pixelixe`) with the backup generator."""

    vendor = "pixelixe"
    routes = [
        ("POST", r"/api/graphic/automation/v2", "automate"),
        ("GET", r"/storage/file/(?P<file_id>[A-Za-z0-9_-]+)\.png", "download"),
    ]
    IMAGES = "pixelixe.images"

    def __init__(
        self,
        store: SandboxStore | None = None,
        behaviour: SandboxBehaviour | None = None,
        *,
        documents: Mapping[str, SandboxDocument],
        api_key: str = SANDBOX_PIXELIXE_KEY,
        base_url: str = "https://studio.pixelixe.com",
        antialias: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store, behaviour, sleep=sleep, clock=clock)
        self.documents = dict(documents)
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.antialias = antialias

    def error(self, status: int, message: str, code: str | None = None) -> httpx.Response:
        return json_response(status, {"status": "error", "message": message})

    def rate_limited(self, retry_after: float) -> httpx.Response:
        return json_response(
            429,
            {"status": "error", "message": "Too many requests"},
            {"retry-after": str(max(1, round(retry_after)))},
        )

    def automate(self, request: httpx.Request) -> httpx.Response:
        body = _json_body(request)
        if not isinstance(body, dict):
            return self.error(400, "The json parameter is missing or malformed")
        if body.get("api_key") != self.api_key:
            return self.error(401, "Invalid API key")
        document_uid = body.get("document_uid")
        if not isinstance(document_uid, str) or document_uid not in self.documents:
            return self.error(404, f"Document {document_uid!r} not found")
        modifications = body.get("modifications")
        if not isinstance(modifications, list) or not all(
            isinstance(m, dict) and isinstance(m.get("name") or m.get("element_name"), str)
            for m in modifications
        ):
            return self.error(400, "modifications must be a list of named elements")
        response_format = body.get("format", "image")
        if response_format not in ("json", "image"):
            return self.error(400, f"Unsupported format {response_format!r}")
        fields = self._fields(self.documents[document_uid], modifications)
        try:
            PostcardContent.from_fields(fields)
        except ValueError as exc:
            return self.error(400, f"Invalid modification: {exc}")
        if response_format == "image":
            return httpx.Response(
                200, content=self._draw(document_uid, fields), headers={"content-type": "image/png"}
            )
        file_id = uuid.uuid4().hex
        self.store.put(self.IMAGES, file_id, {"document_uid": document_uid, "fields": fields})
        now = self.clock()
        stamp = time.strftime("%m-%d-%Y_%H-%M-%S", time.gmtime(now)) + f"-{int(now % 1 * 1000)}"
        return json_response(
            200,
            {
                "status": "success",
                "created_at": stamp,
                "uid": document_uid,
                "custom_field": body.get("custom_field"),
                "image_url": f"{self.base_url}/storage/file/{file_id}.png",
            },
        )

    def download(self, request: httpx.Request, file_id: str) -> httpx.Response:
        doc = self.store.get(self.IMAGES, file_id)
        if doc is None:
            return self.error(404, "File not found")
        return httpx.Response(
            200,
            content=self._draw(doc["document_uid"], doc["fields"]),
            headers={"content-type": "image/png"},
        )

    @staticmethod
    def _fields(document: SandboxDocument, modifications: list[dict[str, Any]]) -> dict[str, Any]:
        fields: dict[str, Any] = {"size": document.size}
        for mod in modifications:
            name = mod.get("name") or mod.get("element_name")
            if name in _TEXT_LAYERS and isinstance(mod.get("text"), str):
                fields[name] = mod["text"]
            elif name in _SHAPE_LAYERS and isinstance(mod.get("background-color"), str):
                fields[_SHAPE_LAYERS[name]] = mod["background-color"]
        if isinstance(fields.get("address_block"), str):
            fields["address_block"] = fields["address_block"].split("\n")
        return fields

    def _draw(self, document_uid: str, fields: Mapping[str, Any]) -> bytes:
        document = self.documents[document_uid]
        content = PostcardContent.from_fields(fields)
        draw = draw_front if document.side == "front" else draw_back
        image = draw(content, antialias=self.antialias)
        if document.scale != 1.0:
            width, height = image.size
            image = image.resize(
                (round(width * document.scale), round(height * document.scale)),
                Image.Resampling.BILINEAR,
            )
        return encode_png(image)
