"""Cloudflare Images: hosts the proof PNGs the printers fetch.

API (integrations.md §5): ``https://api.cloudflare.com/client/v4/accounts/{account_id}`` with
``Authorization: Bearer <token>``; ``POST /images/v1`` (multipart/form-data: ``file``, ``id``,
``metadata``, ``requireSignedURLs``), ``GET`` and ``DELETE /images/v1/{id}``. Every answer is
the envelope ``{"success", "errors": [{"code", "message"}], "messages", "result"}``.

Idempotency: Cloudflare has none, so every upload carries a custom ``id`` derived from the
proof's content (:func:`proof_image_id`). A custom id rules out Cloudflare's signed URLs, and
a proof shows a name and an address, so the id is a keyed hash: nobody without the key can
guess a proof's URL from a recipient id. A retried upload then meets "already exists", which
:meth:`CloudflareImages.upload` treats as success and answers with the stored image; a delete
of an image that is already gone (404) is success too. Both make retries and replays safe.

Not confirmed with Cloudflare ([U] in integrations.md): the duplicate-id error code (5409 is
assumed; any 409 or a message containing "already exists" is accepted) and the not-found code
(5404 assumed; any 404 except the routing errors 7000/7003, which mean a wrong account id, is
accepted). Custom ids keep their ``/`` in API paths.

Rate limit: 1,200 requests per 5 minutes per token, and exceeding it locks the token out for
5 minutes. Pass ``limiter=default_limiter()`` in production to stay under it.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    Conflict,
    IntegrationError,
    NotFound,
    RequestRejected,
)
from mail_pipeline.integrations.http import HttpApi, RetryPolicy, default_error
from mail_pipeline.integrations.ratelimit import SlidingWindowLimiter

log = logging.getLogger(__name__)

VENDOR = "cloudflare_images"
API_BASE = "https://api.cloudflare.com/client/v4/accounts/{account_id}"
DELIVERY_BASE = "https://imagedelivery.net"
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_METADATA_BYTES = 1024
MAX_ID_CHARS = 1024
#: Cloudflare's published global API limit: requests per window (seconds).
RATE_LIMIT = (1200, 300.0)

DUPLICATE_CODES = frozenset({5409})
NOT_FOUND_CODES = frozenset({5404})
AUTH_CODES = frozenset({10000, 10001, 6003, 6111, 9106, 9109})
#: "No route for that URI" / "Could not route to ..., perhaps your object identifier is
#: invalid?": a wrong account id or path, never a missing image.
ROUTING_CODES = frozenset({7000, 7003})

#: ``(image_id, variant) -> URL``: how a hosted image is reached, when not Cloudflare's own.
DeliveryUrl = Callable[[str, str], str]


def default_limiter(fraction: float = 0.9) -> SlidingWindowLimiter:
    """A limiter at ``fraction`` of Cloudflare's global API limit (share it per token)."""
    return SlidingWindowLimiter(RATE_LIMIT[0], RATE_LIMIT[1], fraction=fraction)


def proof_image_id(
    key: str, campaign_id: int, recipient_id: int, fingerprint: str, side: str
) -> str:
    """The custom id of one side of a proof: the same proof always gets the same id, and
    without ``key`` (a deployment secret) no id can be derived from a recipient's ids."""
    if not key:
        raise ValueError("proof image ids need a key")
    digest = hmac.new(
        key.encode("utf-8"), f"{campaign_id}:{recipient_id}:{fingerprint}".encode(), "sha256"
    ).hexdigest()
    return f"proofs/{digest[:40]}/{side}.png"


class ImageAlreadyExists(Conflict):
    """An upload met an existing image with the same custom id."""


@dataclass(frozen=True)
class HostedImage:
    id: str
    #: Where the configured variant is delivered (what printers fetch).
    url: str
    variants: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    filename: str | None = None
    uploaded: str | None = None


def _first_error(response: httpx.Response) -> tuple[int | None, str]:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return None, response.text[:300] or response.reason_phrase
    if not errors or not isinstance(errors[0], dict):
        return None, response.reason_phrase
    code = errors[0].get("code")
    message = "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))
    return (code if isinstance(code, int) else None), message or response.reason_phrase


def cloudflare_error(response: httpx.Response) -> IntegrationError:
    """The typed error for a Cloudflare error envelope."""
    code, message = _first_error(response)
    status = response.status_code
    code_text = None if code is None else str(code)
    if code in DUPLICATE_CODES or status == 409 or "already exist" in message.lower():
        return ImageAlreadyExists(VENDOR, message, status_code=status, code=code_text)
    if code in ROUTING_CODES:
        return RequestRejected(VENDOR, message, status_code=status, code=code_text)
    if code in NOT_FOUND_CODES or status == 404:
        return NotFound(VENDOR, message, status_code=status, code=code_text)
    if code in AUTH_CODES:
        return AuthenticationFailed(VENDOR, message, status_code=status, code=code_text)
    return default_error(VENDOR, response, message, code_text)


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of PNG, JPEG, GIF or WebP bytes; ``None`` for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def id_problem(image_id: str) -> str | None:
    """Why ``image_id`` is not a usable custom id, or ``None``."""
    if not image_id or len(image_id) > MAX_ID_CHARS:
        return f"an image id must be 1-{MAX_ID_CHARS} characters"
    if image_id.startswith("/") or "\\" in image_id or any(ord(c) < 32 for c in image_id):
        return f"image id {image_id!r} must not start with '/' or hold control characters"
    if any(part in ("", ".", "..") for part in image_id.split("/")):
        return f"image id {image_id!r} has an empty, '.' or '..' path segment"
    return None


class CloudflareImages:
    """Upload (idempotent by custom id), fetch and delete hosted images."""

    def __init__(
        self,
        account_id: str,
        api_token: str,
        *,
        variant: str = "print",
        account_hash: str | None = None,
        delivery_url: DeliveryUrl | None = None,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        limiter: SlidingWindowLimiter | None = None,
        timeout: httpx.Timeout | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``variant`` is the delivery variant printers get (sized for print, e.g. 1875x1275).

        ``delivery_url`` overrides how URLs are made (the sandbox's :class:`LocalImageUrl` gives
        ``file://`` URLs a person can open); otherwise the URL comes from the image's
        ``variants``, or is built from ``account_hash``.
        """
        self.variant = variant
        self.account_hash = account_hash
        self.delivery_url = delivery_url
        self.api = HttpApi(
            vendor=VENDOR,
            base_url=(base_url or API_BASE.format(account_id=account_id)).rstrip("/"),
            headers={"Authorization": f"Bearer {api_token}", "Accept": "application/json"},
            timeout=timeout or httpx.Timeout(30.0, connect=5.0),
            retry=retry or RetryPolicy(),
            transport=transport,
            limiter=limiter,
            error_mapper=cloudflare_error,
            sleep=sleep,
        )

    def upload(
        self, image_id: str, png: bytes, metadata: Mapping[str, Any] | None = None
    ) -> HostedImage:
        """Host ``png`` under ``image_id``; an existing image with that id is the answer."""
        problem = id_problem(image_id)
        if problem:
            raise RequestRejected(VENDOR, problem)
        if len(png) > MAX_IMAGE_BYTES:
            raise RequestRejected(
                VENDOR, f"image {image_id} is {len(png)} bytes; the limit is {MAX_IMAGE_BYTES}"
            )
        meta = json.dumps(dict(metadata or {}), sort_keys=True, separators=(",", ":"))
        if len(meta.encode()) > MAX_METADATA_BYTES:
            raise RequestRejected(
                VENDOR,
                f"metadata for {image_id} is {len(meta.encode())} bytes; "
                f"the limit is {MAX_METADATA_BYTES}",
            )
        filename = image_id.rsplit("/", 1)[-1]
        mime = sniff_image_type(png) or "application/octet-stream"
        try:
            response = self.api.request(
                "POST",
                "/images/v1",
                files={"file": (filename, png, mime)},
                data={"id": image_id, "metadata": meta, "requireSignedURLs": "false"},
            )
        except ImageAlreadyExists:
            # The id is (part of) the proof's URL: it stays out of logs.
            log.info("an image with this id already exists at Cloudflare; using it")
            return self.get(image_id)
        return self._hosted(self._result(response))

    def get(self, image_id: str) -> HostedImage:
        """The hosted image, or :class:`NotFound`."""
        response = self.api.request("GET", self._path(image_id))
        return self._hosted(self._result(response))

    def delete(self, image_id: str) -> bool:
        """Delete the image; ``False`` when it was already gone (which is not an error)."""
        try:
            self.api.request("DELETE", self._path(image_id))
        except NotFound:
            return False
        return True

    def close(self) -> None:
        self.api.close()

    @staticmethod
    def _path(image_id: str) -> str:
        problem = id_problem(image_id)
        if problem:
            raise RequestRejected(VENDOR, problem)
        return "/images/v1/" + urllib.parse.quote(image_id, safe="/")

    @staticmethod
    def _result(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise RequestRejected(
                VENDOR, "answered with a body that is not JSON", status_code=response.status_code
            ) from exc
        if not isinstance(body, dict) or not body.get("success"):
            raise cloudflare_error(response)
        result = body.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("id"), str):
            raise RequestRejected(
                VENDOR, "answered success without an image", status_code=response.status_code
            )
        return result

    def _hosted(self, result: dict[str, Any]) -> HostedImage:
        image_id = result["id"]
        variants = tuple(str(v) for v in result.get("variants") or ())
        return HostedImage(
            id=image_id,
            url=self._url(image_id, variants),
            variants=variants,
            metadata=result.get("metadata") or {},
            filename=result.get("filename"),
            uploaded=result.get("uploaded"),
        )

    def _url(self, image_id: str, variants: tuple[str, ...]) -> str:
        if self.delivery_url is not None:
            return self.delivery_url(image_id, self.variant)
        for url in variants:
            if url.rstrip("/").rsplit("/", 1)[-1] == self.variant:
                return url
        account_hash = self.account_hash
        if account_hash is None and variants:
            # https://imagedelivery.net/<account_hash>/<id>/<variant>
            account_hash = urllib.parse.urlsplit(variants[0]).path.lstrip("/").split("/", 1)[0]
        if not account_hash:
            raise RequestRejected(
                VENDOR,
                f"cannot tell the delivery URL of {image_id}: no variants in the "
                "answer and no account_hash configured",
            )
        if variants:
            log.warning(
                "variant %r is not among %s; building its URL anyway", self.variant, variants
            )
        return f"{DELIVERY_BASE}/{account_hash}/{image_id}/{self.variant}"
