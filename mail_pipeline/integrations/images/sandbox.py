"""A Cloudflare Images stand-in that keeps the images as files a person can open.

:class:`CloudflareImagesSandbox` answers the API of :mod:`.cloudflare` with Cloudflare's
envelope, status codes and headers: a duplicate custom id is ``409`` (code 5409), a missing
image ``404`` (code 5404), a file over 10 MB ``413``, a bad token ``403`` (code 10000), and
exceeding the rate limit locks the token out (``429`` with ``retry-after``; 5 minutes, like
Cloudflare, unless ``lockout_seconds`` says otherwise). Image records live in the
:class:`SandboxStore`; the bytes are written to ``storage_dir``.

The batch API too: ``GET .../images/v1/batch_token`` (with the API token) issues a token that
lives ``batch_token_seconds`` (kept in the store, so every process sharing it knows it), and
the batch host's upload, get and delete are the same handlers, reached at
``https://batch.imagedelivery.net/images/v1`` in process and at
``<server>/cloudflare/batch/images/v1`` through the sandbox server (so it needs no mount of its
own). A missing, unknown or expired batch token is refused with ``401`` (code 10000, the
message says which). ``SandboxBehaviour.rate_limit`` applies per token: the API token has its
window (and its lockout), each batch token its own, and a batch token over its window gets
``429`` with ``retry-after`` until there is room, without a lockout (Cloudflare documents none).

Where the files are, and the URLs: an image with id ``proofs/c1/r2/ab12/front.png`` is stored
at ``<storage_dir>/<account_hash>/proofs/c1/r2/ab12/front.png`` (``.png`` is appended to an id
without an image extension). The API's ``variants`` keep Cloudflare's shape,
``<delivery_base_url>/<account_hash>/<id>/<variant>``; to get URLs a person can open, give the
client ``delivery_url=LocalImageUrl(storage_dir, account_hash)``, which answers the file's
``file://`` URL (every variant is the same stored original), or ``LocalImageUrl(...,
base_url="http://127.0.0.1:8000")`` when something serves ``storage_dir`` over HTTP.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import secrets
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, UnidentifiedImageError

from mail_pipeline.integrations.images.cloudflare import (
    BATCH_RATE_LIMIT,
    MAX_IMAGE_BYTES,
    MAX_METADATA_BYTES,
    RATE_LIMIT,
    id_problem,
    sniff_image_type,
)
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import (
    SandboxBehaviour,
    SandboxTransport,
    atomic,
    json_response,
)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
_MAX_SIDE = 12_000
_MAX_PIXELS = 100_000_000
_DEFAULT_CODES = {
    400: 5400,
    401: 10000,
    403: 10000,
    404: 5404,
    405: 10405,
    409: 5409,
    413: 5413,
    415: 5415,
    429: 971,
}


@dataclass(frozen=True)
class LocalImageUrl:
    """Where the sandbox keeps an image, as a URL: a ``DeliveryUrl`` for the client."""

    storage_dir: Path | str
    account_hash: str = "sandbox-hash"
    #: Serve from here instead of ``file://`` (e.g. a local static file server on storage_dir).
    base_url: str | None = None

    def path_for(self, image_id: str) -> Path:
        problem = id_problem(image_id)
        if problem:
            raise ValueError(problem)
        relative = image_id if image_id.lower().endswith(_IMAGE_SUFFIXES) else image_id + ".png"
        return Path(self.storage_dir) / self.account_hash / relative

    def __call__(self, image_id: str, variant: str) -> str:
        path = self.path_for(image_id)
        if self.base_url:
            relative = path.relative_to(Path(self.storage_dir)).as_posix()
            return f"{self.base_url.rstrip('/')}/{relative}"
        return path.resolve().as_uri()


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``name -> (filename, bytes)`` for a multipart/form-data body; ``ValueError`` if bad."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or match is None:
        raise ValueError("Content-Type must be multipart/form-data with a boundary")
    delimiter = b"--" + match.group(1).encode()
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a multipart part has no header block")
        disposition = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                disposition = value
        name = re.search(r'\bname="([^"]*)"', disposition)
        if name is None:
            raise ValueError("a multipart part has no name")
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        fields[name.group(1)] = (
            filename.group(1) if filename else None,
            data.removesuffix(b"\r\n"),
        )
    return fields


SANDBOX_ACCOUNT_ID = "sandbox-account"
SANDBOX_API_TOKEN = "sandbox-cloudflare-token"


#: The batch host's paths: ``https://batch.imagedelivery.net/images/v1`` in process, and
#: ``<server>/cloudflare/batch/images/v1`` through the sandbox server (its mount removed).
_BATCH = r"(?:/batch)?/images/v1"
_BATCH_PATH = re.compile(_BATCH + r"(?:/.*)?$")


class CloudflareImagesSandbox(SandboxTransport):
    vendor = "cloudflare_images"
    _ACCOUNT = r"/client/v4/accounts/(?P<account_id>[^/]+)/images/v1"
    routes = [
        ("GET", _ACCOUNT + r"/batch_token", "batch_token"),
        ("POST", _ACCOUNT, "upload"),
        ("GET", _ACCOUNT + r"/(?P<image_id>.+)", "get_image"),
        ("DELETE", _ACCOUNT + r"/(?P<image_id>.+)", "delete_image"),
        ("POST", _BATCH, "batch_upload"),
        ("GET", _BATCH + r"/(?P<image_id>.+)", "batch_get_image"),
        ("DELETE", _BATCH + r"/(?P<image_id>.+)", "batch_delete_image"),
    ]
    IMAGES = "cloudflare_images.images"
    LOCKOUT = "cloudflare_images.lockout"
    #: Batch token -> ``{"expires": epoch seconds}``.
    BATCH_TOKENS = "cloudflare_images.batch_tokens"
    #: An expired batch token is still recognised (and refused as expired) this long.
    BATCH_TOKEN_MEMORY = 3600.0

    def __init__(
        self,
        store: SandboxStore | None = None,
        behaviour: SandboxBehaviour | None = None,
        *,
        storage_dir: Path | str,
        account_id: str = SANDBOX_ACCOUNT_ID,
        api_token: str = SANDBOX_API_TOKEN,
        account_hash: str = "sandbox-hash",
        variants: Sequence[str] = ("public", "print"),
        delivery_base_url: str = "https://imagedelivery.net",
        lockout_seconds: float = 300.0,
        batch_token_seconds: float = 600.0,
        max_bytes: int = MAX_IMAGE_BYTES,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``behaviour.rate_limit`` defaults to none; Cloudflare's is ``RATE_LIMIT`` for the
        API token and ``BATCH_RATE_LIMIT`` per batch token. When set, it applies per token:
        the API token and each batch token have a window of their own. A batch token lives
        ``batch_token_seconds``."""
        super().__init__(store, behaviour, sleep=sleep, clock=clock)
        self.files = LocalImageUrl(storage_dir, account_hash)
        self.account_id = account_id
        self.api_token = api_token
        self.account_hash = account_hash
        self.variants = tuple(variants)
        self.delivery_base_url = delivery_base_url.rstrip("/")
        self.lockout_seconds = lockout_seconds
        self.batch_token_seconds = batch_token_seconds
        self.max_bytes = max_bytes
        #: The batch token of the request this thread is answering (``""``: a batch call
        #: without one), or None for the global API: which rate window, and which credential.
        self._caller = threading.local()
        self._batch_windows: dict[str, deque[float]] = {}

    # -- vendor behaviour -------------------------------------------------------------------
    def error(self, status: int, message: str, code: str | None = None) -> httpx.Response:
        if code and code.isdigit():
            number = int(code)
        elif code == "not_found":  # no route matched
            number = 7000
        else:
            number = _DEFAULT_CODES.get(status, 5500)
        return json_response(
            status,
            {
                "result": None,
                "success": False,
                "errors": [{"code": number, "message": message}],
                "messages": [],
            },
        )

    def _too_many(self, wait: float) -> httpx.Response:
        seconds = max(1, round(wait))
        response = self.error(429, "Please wait and consider throttling your request speed")
        response.headers["retry-after"] = str(seconds)
        response.headers["ratelimit"] = f'"default";r=0;t={seconds}'
        response.headers["ratelimit-policy"] = f'"default";q={RATE_LIMIT[0]};w={RATE_LIMIT[1]:.0f}'
        return response

    def rate_limited(self, retry_after: float) -> httpx.Response:
        """Over the limit: the token is locked out, and its window starts afresh after.
        A batch token is not locked out: its calls are refused until its window has room."""
        if self._batch_caller() is not None:
            return self._too_many_batch(retry_after)
        wait = max(retry_after, self.lockout_seconds)
        self.store.put(self.LOCKOUT, self.api_token, {"until": self.clock() + wait})
        with self._lock:
            self._window.clear()
        response = self._too_many(wait)
        calls, seconds = self.behaviour.rate_limit or RATE_LIMIT  # the limit enforced
        response.headers["ratelimit-policy"] = f'"default";q={calls};w={seconds:g}'
        return response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(self.mount_path)
        batch_token = None
        if _BATCH_PATH.match(path):
            # The batch host: not the global API, so its lockout does not apply.
            batch_token = request.headers.get("authorization", "").removeprefix("Bearer ")
        else:
            lockout = self.store.get(self.LOCKOUT, self.api_token)
            if lockout is not None:
                remaining = lockout["until"] - self.clock()
                if remaining > 0:
                    return self._too_many(remaining)
                self.store.delete(self.LOCKOUT, self.api_token)
        self._caller.batch_token = batch_token
        try:
            return super().handle_request(request)
        finally:
            self._caller.batch_token = None

    def _take_rate_slot(
        self, max_calls: int, per_seconds: float, now: float | None = None
    ) -> float | None:
        """The global API's window for the API token; one window per batch token."""
        token = self._batch_caller()
        if token is None:
            return super()._take_rate_slot(max_calls, per_seconds, now=now)
        now = self.clock() if now is None else now
        with self._lock:
            window = self._batch_windows.setdefault(token, deque())
            while window and now - window[0] >= per_seconds:
                window.popleft()
            if len(window) >= max_calls:
                return per_seconds - (now - window[0])
            window.append(now)
            return None

    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        token = self._batch_caller()
        if token is not None:
            return self._check_batch_token(token)
        header = request.headers.get("authorization")
        if not header:
            return self.error(400, "Invalid request headers", "6003")
        if header != f"Bearer {self.api_token}":
            return self.error(403, "Authentication error", "10000")
        return None

    def _batch_caller(self) -> str | None:
        token: str | None = getattr(self._caller, "batch_token", None)
        return token

    def _check_batch_token(self, token: str) -> httpx.Response | None:
        """401 with Cloudflare's envelope for a missing, unknown or expired batch token."""
        if not token:
            return self.error(401, "Authentication error: a batch token is required", "10000")
        doc = self.store.get(self.BATCH_TOKENS, token)
        if doc is None:
            return self.error(401, "Authentication error: unknown batch token", "10000")
        if doc["expires"] <= self.clock():
            return self.error(401, "Authentication error: the batch token has expired", "10000")
        return None

    def _too_many_batch(self, wait: float) -> httpx.Response:
        seconds = max(1, math.ceil(wait))
        response = self.error(429, "Please wait and consider throttling your request speed")
        response.headers["retry-after"] = str(seconds)
        response.headers["ratelimit"] = f'"batch";r=0;t={seconds}'
        calls, window = self.behaviour.rate_limit or BATCH_RATE_LIMIT
        response.headers["ratelimit-policy"] = f'"batch";q={calls};w={window:g}'
        return response

    # -- routes -----------------------------------------------------------------------------
    def batch_token(self, request: httpx.Request, account_id: str) -> httpx.Response:
        """A new batch token (on the global API, with the API token), valid for
        ``batch_token_seconds``; tokens long expired are forgotten."""
        if account_id != self.account_id:
            return self._unroutable(request)
        now = self.clock()
        self._forget_expired_tokens(now)
        token = secrets.token_urlsafe(32)
        expires = now + self.batch_token_seconds
        self.store.put(self.BATCH_TOKENS, token, {"expires": expires})
        expires_at = datetime.fromtimestamp(expires, UTC).isoformat(timespec="microseconds")
        return self._ok({"token": token, "expiresAt": expires_at.replace("+00:00", "Z")})

    def batch_upload(self, request: httpx.Request) -> httpx.Response:
        return self.upload(request, account_id=self.account_id)

    def batch_get_image(self, request: httpx.Request, image_id: str) -> httpx.Response:
        return self.get_image(request, account_id=self.account_id, image_id=image_id)

    def batch_delete_image(self, request: httpx.Request, image_id: str) -> httpx.Response:
        return self.delete_image(request, account_id=self.account_id, image_id=image_id)

    def _forget_expired_tokens(self, now: float) -> None:
        after = 0
        while page := self.store.scan(self.BATCH_TOKENS, after_seq=after, limit=500):
            for seq, token, doc in page:
                after = seq
                if doc["expires"] + self.BATCH_TOKEN_MEMORY < now:
                    self.store.delete(self.BATCH_TOKENS, token)
                    with self._lock:
                        self._batch_windows.pop(token, None)

    def _unroutable(self, request: httpx.Request) -> httpx.Response:
        return self.error(
            404,
            f"Could not route to {request.url.path}, perhaps your object identifier is invalid?",
            "7003",
        )

    @atomic
    def upload(self, request: httpx.Request, account_id: str) -> httpx.Response:
        if account_id != self.account_id:
            return self._unroutable(request)
        try:
            form = parse_multipart(request.headers.get("content-type", ""), request.read())
        except ValueError as exc:
            return self.error(400, f"Bad request: {exc}")
        if "url" in form:
            message = (
                "file and url are mutually exclusive"
                if "file" in form
                else "the sandbox cannot fetch url uploads; send the file"
            )
            return self.error(400, f"Bad request: {message}")
        if "file" not in form:
            return self.error(400, "Bad request: an image file is required")
        filename, data = form["file"]
        rejection = self._check_image(data)
        if rejection is not None:
            return rejection
        image_id = form["id"][1].decode() if "id" in form else str(uuid.uuid4())
        problem = id_problem(image_id)
        if problem:
            return self.error(400, f"Bad request: {problem}")
        signed = form.get("requireSignedURLs", (None, b"false"))[1].decode().lower() == "true"
        if signed and "id" in form:
            return self.error(
                400, "Bad request: images with a custom ID cannot require signed URLs"
            )
        try:
            metadata = json.loads(form["metadata"][1] or b"{}") if "metadata" in form else {}
        except ValueError:
            return self.error(400, "Bad request: metadata must be JSON")
        if not isinstance(metadata, dict) or len(form.get("metadata", (None, b""))[1]) > (
            MAX_METADATA_BYTES
        ):
            return self.error(
                400,
                f"Bad request: metadata must be a JSON object of at most "
                f"{MAX_METADATA_BYTES} bytes",
            )

        doc = {
            "id": image_id,
            "filename": filename or image_id.rsplit("/", 1)[-1],
            "metadata": metadata,
            "uploaded": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.clock())),
            "requireSignedURLs": signed,
            "path": str(self.files.path_for(image_id)),
        }
        return self._store_new(doc, data)

    def get_image(self, request: httpx.Request, account_id: str, image_id: str) -> httpx.Response:
        if account_id != self.account_id:
            return self._unroutable(request)
        doc = self.store.get(self.IMAGES, image_id)
        if doc is None:
            return self.error(404, "Image not found")
        return self._ok(self._result(doc))

    def delete_image(
        self, request: httpx.Request, account_id: str, image_id: str
    ) -> httpx.Response:
        if account_id != self.account_id:
            return self._unroutable(request)
        doc = self.store.get(self.IMAGES, image_id)
        if doc is None:
            return self.error(404, "Image not found")
        # The file goes first: a concurrent re-upload still meets the record and is refused,
        # so a file never outlives its record nor vanishes under a newer one.
        self._remove_file(Path(doc["path"]))
        if not self.store.delete(self.IMAGES, image_id):
            return self.error(404, "Image not found")
        return self._ok({})

    # -- helpers ----------------------------------------------------------------------------
    def _check_image(self, data: bytes) -> httpx.Response | None:
        if len(data) > self.max_bytes:
            return self.error(
                413, f"Image exceeds the maximum size of {self.max_bytes // (1024 * 1024)} MB"
            )
        if sniff_image_type(data) is None:
            return self.error(415, "Uploaded image must be PNG, JPEG, GIF or WebP")
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError):
            return self.error(400, "Bad request: the image could not be decoded")
        if max(width, height) > _MAX_SIDE or width * height > _MAX_PIXELS:
            return self.error(
                400,
                f"Bad request: {width}x{height} px exceeds 12,000 px per side or 100 megapixels",
            )
        return None

    def _store_new(self, doc: dict[str, Any], data: bytes) -> httpx.Response:
        final = Path(doc["path"])
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            stored, new = self.store.insert_if_absent(self.IMAGES, doc["id"], doc)
            if not new:
                return self.error(409, "Resource already exists")
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self._ok(self._result(stored))

    def _remove_file(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        root = Path(self.files.storage_dir) / self.account_hash
        parent = path.parent
        while parent != root and root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def _result(self, doc: dict[str, Any]) -> dict[str, Any]:
        base = f"{self.delivery_base_url}/{self.account_hash}/{doc['id']}"
        return {
            "id": doc["id"],
            "filename": doc["filename"],
            "metadata": doc["metadata"],
            "uploaded": doc["uploaded"],
            "requireSignedURLs": doc["requireSignedURLs"],
            "variants": [f"{base}/{variant}" for variant in self.variants],
        }

    @staticmethod
    def _ok(result: dict[str, Any]) -> httpx.Response:
        return json_response(200, {"result": result, "success": True, "errors": [], "messages": []})
