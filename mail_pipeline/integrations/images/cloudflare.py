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

Rate limits: the global API allows 1,200 requests per 5 minutes per token, and exceeding it
locks the token out of every call for 5 minutes; pass ``limiter=default_limiter()`` to stay
under it. That would cap proofing (2 uploads per recipient, 2 deletions later) near 2
recipients/s, so uploads, gets and deletes go through the **batch API** by default
(``batch=False``: the plain API). ``GET /images/v1/batch_token`` on the global API (one call,
through ``limiter``) issues a short-lived token; calls made with it go to
``https://batch.imagedelivery.net/images/v1`` with the same methods and bodies, do not count
against the global limit, and are limited to 200 requests/s per token (the client's
``batch_limiter``: 90 % of that by default). :class:`BatchTokens` fetches the token on first
use, shares it between threads, renews it ``BATCH_TOKEN_MARGIN`` before its ``expiresAt``, and
renews it once when the batch host refuses it (401/403); refused again, the call fails with
:class:`AuthenticationFailed`. A 429 or 5xx from the batch host is retried as the global API's.
Not confirmed with Cloudflare ([U]): how the batch host words an expired token (any 401/403
there is taken as one) and its error body (the envelope, or a flat ``{"code", "message"}`` as
seen for a forbidden endpoint; both are read).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from mail_pipeline.integrations.ratelimit import Limiter, SlidingWindowLimiter

log = logging.getLogger(__name__)

VENDOR = "cloudflare_images"
API_BASE = "https://api.cloudflare.com/client/v4/accounts/{account_id}"
DELIVERY_BASE = "https://imagedelivery.net"
#: Where batch-token calls go: the same paths as ``API_BASE``'s ``/images/v1``.
BATCH_BASE = "https://batch.imagedelivery.net/images/v1"
_IMAGES = "/images/v1"
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_METADATA_BYTES = 1024
MAX_ID_CHARS = 1024
#: Cloudflare's published global API limit: requests per window (seconds).
RATE_LIMIT = (1200, 300.0)
#: The batch API's limit per batch token: requests per window (seconds).
BATCH_RATE_LIMIT = (200, 1.0)
#: A batch token is renewed this long before its ``expiresAt`` (or at half its life, if sooner).
BATCH_TOKEN_MARGIN = 60.0
#: A token that arrives already expired by our clock (skew) is still used this long: the
#: batch host's refusal renews it, and the global API is not asked on every call.
_SKEWED_TOKEN_REUSE = 30.0

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


def default_batch_limiter(fraction: float = 0.9) -> SlidingWindowLimiter:
    """A limiter at ``fraction`` of the batch API's limit (one per batch token)."""
    return SlidingWindowLimiter(BATCH_RATE_LIMIT[0], BATCH_RATE_LIMIT[1], fraction=fraction)


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
        body = response.json()
        errors = body.get("errors") or []
    except (ValueError, AttributeError):
        return None, response.text[:300] or response.reason_phrase
    if not errors and isinstance(body.get("message"), str):
        # The batch host has answered ``{"code": "103", "message": "forbidden endpoint"}``.
        flat = str(body.get("code", ""))
        return (int(flat) if flat.isdigit() else None), body["message"]
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


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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


def parse_expiry(text: object) -> float:
    """``expiresAt`` (ISO 8601, e.g. ``2023-08-09T15:33:56.273411222Z``) as epoch seconds."""
    if not isinstance(text, str):
        raise ValueError(f"expiresAt {text!r} is not a timestamp")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True)
class BatchToken:
    value: str = field(repr=False)
    #: Epoch seconds, by Cloudflare's clock.
    expires_at: float
    #: Epoch seconds, by ours: after this the token is replaced before use.
    renew_at: float


class BatchTokens:
    """The batch token a client's batch calls carry, shared by every thread of a run.

    Fetched on first use (``fetch`` answers the token and its ``expiresAt`` as epoch seconds),
    renewed ``margin`` before it expires (at half its life when that is sooner), and renewed
    when the batch host refuses it. One fetch at a time: threads that need a token while it
    is fetched wait for that one instead of asking the global API again.
    """

    def __init__(
        self,
        fetch: Callable[[], tuple[str, float]],
        *,
        margin: float = BATCH_TOKEN_MARGIN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self.margin = margin
        self._clock = clock
        self._token: BatchToken | None = None
        self._lock = threading.Lock()
        #: How many tokens were fetched (for tests and run metadata).
        self.fetched = 0

    def current(self) -> str:
        """A token that is not due for renewal, fetched if need be."""
        with self._lock:
            return self._usable().value

    def refused(self, value: str) -> str:
        """The batch host refused ``value``: a new token, unless another thread has already
        replaced it (then that one)."""
        with self._lock:
            if self._token is not None and self._token.value == value:
                self._token = None
            return self._usable().value

    def _usable(self) -> BatchToken:
        token = self._token
        if token is None or self._clock() >= token.renew_at:
            token = self._token = self._renew()
        return token

    def _renew(self) -> BatchToken:
        value, expires_at = self._fetch()
        self.fetched += 1
        now = self._clock()
        life = expires_at - now
        if life <= 0:
            log.warning(
                "a Cloudflare batch token arrived already expired by this machine's clock "
                "(%.0fs); check the clock. Using it until the batch host refuses it",
                -life,
            )
            renew_at = now + _SKEWED_TOKEN_REUSE
        else:
            renew_at = expires_at - min(self.margin, life / 2)
        log.info("fetched a Cloudflare batch token; renewing it in %.0fs", renew_at - now)
        return BatchToken(value, expires_at, renew_at)


class CloudflareImages:
    """Upload (idempotent by custom id), fetch and delete hosted images; thread-safe."""

    def __init__(
        self,
        account_id: str,
        api_token: str,
        *,
        variant: str = "print",
        account_hash: str | None = None,
        delivery_url: DeliveryUrl | None = None,
        base_url: str | None = None,
        batch: bool = True,
        batch_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        limiter: Limiter | None = None,
        batch_limiter: Limiter | None = None,
        token_margin: float = BATCH_TOKEN_MARGIN,
        timeout: httpx.Timeout | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``variant`` is the delivery variant printers get (sized for print, e.g. 1875x1275).

        ``delivery_url`` overrides how URLs are made (the sandbox's :class:`LocalImageUrl` gives
        ``file://`` URLs a person can open); otherwise the URL comes from the image's
        ``variants``, or is built from ``account_hash``.

        ``batch``: uploads, gets and deletes go through the batch API at ``batch_url`` (default
        :data:`BATCH_BASE`; required with a ``base_url`` of its own, so a stand-in's tokens are
        never sent to Cloudflare), each call through ``batch_limiter`` (default
        :func:`default_batch_limiter`). ``limiter`` applies to the global API: the batch-token
        fetches, or every call when ``batch`` is False. ``clock`` is the wall clock
        ``expiresAt`` is compared with; ``token_margin``: how long before it a token is renewed.
        """
        self.variant = variant
        self.account_hash = account_hash
        self.delivery_url = delivery_url
        timeout = timeout or httpx.Timeout(30.0, connect=5.0)
        retry = retry or RetryPolicy()
        self.api = HttpApi(
            vendor=VENDOR,
            base_url=(base_url or API_BASE.format(account_id=account_id)).rstrip("/"),
            headers={"Authorization": f"Bearer {api_token}", "Accept": "application/json"},
            timeout=timeout,
            retry=retry,
            transport=transport,
            limiter=limiter,
            error_mapper=cloudflare_error,
            sleep=sleep,
        )
        self.batch_api: HttpApi | None = None
        self.batch_tokens: BatchTokens | None = None
        if batch:
            if batch_url is None and base_url is not None:
                raise ValueError("a client with its own base_url needs batch_url (or batch=False)")
            url = (batch_url or BATCH_BASE).rstrip("/")
            if not url.endswith(_IMAGES):
                raise ValueError(f"batch_url must end with {_IMAGES}: {url}")
            # The batch token is per call (it is renewed), not a header of the client.
            self.batch_api = HttpApi(
                vendor=VENDOR,
                base_url=url.removesuffix(_IMAGES),
                headers={"Accept": "application/json"},
                timeout=timeout,
                retry=retry,
                transport=transport,
                limiter=batch_limiter or default_batch_limiter(),
                error_mapper=cloudflare_error,
                sleep=sleep,
            )
            self.batch_tokens = BatchTokens(
                self._fetch_batch_token, margin=token_margin, clock=clock
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
            response = self._request(
                "POST",
                _IMAGES,
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
        response = self._request("GET", self._path(image_id))
        return self._hosted(self._result(response))

    def delete(self, image_id: str) -> bool:
        """Delete the image; ``False`` when it was already gone (which is not an error)."""
        try:
            self._request("DELETE", self._path(image_id))
        except NotFound:
            return False
        return True

    def close(self) -> None:
        self.api.close()
        if self.batch_api is not None:
            self.batch_api.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One images call: through the batch API when configured, else the global API."""
        if self.batch_api is None or self.batch_tokens is None:
            return self.api.request(method, path, **kwargs)
        token = self.batch_tokens.current()
        try:
            return self.batch_api.request(method, path, headers=_bearer(token), **kwargs)
        except AuthenticationFailed as exc:
            if exc.status_code not in (401, 403):
                raise
            # The token expired early, or was revoked: one new token, one more try.
            log.info("the Cloudflare batch host refused the batch token (%s); renewing it", exc)
            token = self.batch_tokens.refused(token)
        try:
            return self.batch_api.request(method, path, headers=_bearer(token), **kwargs)
        except AuthenticationFailed as exc:
            if exc.status_code not in (401, 403):
                raise
            raise AuthenticationFailed(
                VENDOR,
                f"the batch API refused a newly issued batch token too ({exc.message}); "
                "check the API token's Images permission, or use the plain API (batch=False)",
                status_code=exc.status_code,
                code=exc.code,
            ) from exc

    def _fetch_batch_token(self) -> tuple[str, float]:
        """A new batch token from the global API (one call, counted against its limit)."""
        result = self._success(self.api.request("GET", f"{_IMAGES}/batch_token"))
        token = result.get("token")
        if not isinstance(token, str) or not token:
            raise RequestRejected(VENDOR, "answered a batch token request without a token")
        try:
            expires_at = parse_expiry(result.get("expiresAt"))
        except ValueError as exc:
            raise RequestRejected(
                VENDOR, f"answered a batch token without a usable expiresAt: {exc}"
            ) from exc
        return token, expires_at

    @staticmethod
    def _path(image_id: str) -> str:
        problem = id_problem(image_id)
        if problem:
            raise RequestRejected(VENDOR, problem)
        return f"{_IMAGES}/" + urllib.parse.quote(image_id, safe="/")

    @staticmethod
    def _success(response: httpx.Response) -> dict[str, Any]:
        """The ``result`` object of a successful envelope; a typed error otherwise."""
        try:
            body = response.json()
        except ValueError as exc:
            raise RequestRejected(
                VENDOR, "answered with a body that is not JSON", status_code=response.status_code
            ) from exc
        if not isinstance(body, dict) or not body.get("success"):
            raise cloudflare_error(response)
        result = body.get("result")
        if not isinstance(result, dict):
            raise RequestRejected(
                VENDOR, "answered success without a result", status_code=response.status_code
            )
        return result

    @classmethod
    def _result(cls, response: httpx.Response) -> dict[str, Any]:
        result = cls._success(response)
        if not isinstance(result.get("id"), str):
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
