"""Cloudflare Images' batch API: batch tokens, their renewal, and calls to the batch host.

Against Cloudflare's documented shapes (respx), then against the sandbox, in process and
through the sandbox HTTP server, where the images must land exactly as through the plain API.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import respx
from PIL import Image

from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.images.cloudflare import (
    BATCH_BASE,
    CloudflareImages,
    parse_expiry,
)
from mail_pipeline.integrations.images.sandbox import CloudflareImagesSandbox, LocalImageUrl
from mail_pipeline.integrations.ratelimit import SlidingWindowLimiter
from mail_pipeline.integrations.sandbox.server import (
    SandboxHTTPServer,
    SandboxVendors,
    ServerConfig,
)
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.resources.images import SandboxImageHost

ACCOUNT = "acc123"
API = f"https://api.cloudflare.com/client/v4/accounts/{ACCOUNT}/images/v1"
TOKEN_URL = f"{API}/batch_token"
IMAGE_ID = "proofs/0123456789abcdef0123456789abcdef01234567/front.png"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class CountingLimiter(SlidingWindowLimiter):
    def __init__(self) -> None:
        super().__init__(10_000, 1.0)
        self.acquired = 0
        self._count_lock = threading.Lock()

    def acquire(self) -> None:
        with self._count_lock:
            self.acquired += 1
        super().acquire()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def envelope(result: object = None, errors: list[dict[str, object]] | None = None) -> object:
    return {"result": result, "success": not errors, "errors": errors or [], "messages": []}


def token_answer(token: str, expires: float) -> httpx.Response:
    return httpx.Response(200, json=envelope({"token": token, "expiresAt": iso(expires)}))


def image(image_id: str = IMAGE_ID) -> dict[str, object]:
    return {
        "id": image_id,
        "filename": "front.png",
        "metadata": {},
        "uploaded": "2026-01-31T16:39:28.458Z",
        "requireSignedURLs": False,
        "variants": [f"https://imagedelivery.net/HASH/{image_id}/print"],
    }


def refused(message: str = "Authentication error", status: int = 401) -> httpx.Response:
    return httpx.Response(status, json=envelope(errors=[{"code": 10000, "message": message}]))


def client(clock: FakeClock | None = None, **kwargs: object) -> CloudflareImages:
    clock = clock or FakeClock()
    kwargs.setdefault("sleep", clock.sleep)
    return CloudflareImages(ACCOUNT, "cf-token", clock=clock, **kwargs)  # type: ignore[arg-type]


def bearer(route: respx.Route) -> list[str]:
    return [call.request.headers["authorization"] for call in route.calls]


# -- the client against Cloudflare's shapes ------------------------------------------------------
@respx.mock
def test_one_token_serves_many_uploads_from_many_threads() -> None:
    def slow_token(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)  # every thread arrives while the first one fetches
        return token_answer("batch-1", T0 + 3600)

    tokens = respx.get(TOKEN_URL).mock(side_effect=slow_token)
    uploads = respx.post(BATCH_BASE).mock(
        side_effect=lambda r: httpx.Response(200, json=envelope(image()))
    )
    plain = respx.post(API).mock(return_value=httpx.Response(500))
    global_limiter, batch_limiter = CountingLimiter(), CountingLimiter()
    images = client(limiter=global_limiter, batch_limiter=batch_limiter)

    with ThreadPoolExecutor(max_workers=16) as pool:
        hosted = list(pool.map(lambda n: images.upload(IMAGE_ID, PNG), range(64)))

    assert len(hosted) == 64 and tokens.call_count == 1
    assert tokens.calls.last.request.headers["authorization"] == "Bearer cf-token"
    assert set(bearer(uploads)) == {"Bearer batch-1"} and uploads.call_count == 64
    assert not plain.called, "nothing went to the global API but the token"
    assert (global_limiter.acquired, batch_limiter.acquired) == (1, 64)
    assert images.batch_tokens is not None and images.batch_tokens.fetched == 1


@respx.mock
def test_gets_and_deletes_use_the_batch_host_with_the_same_paths() -> None:
    respx.get(TOKEN_URL).mock(return_value=token_answer("batch-1", T0 + 3600))
    get = respx.get(f"{BATCH_BASE}/{IMAGE_ID}").mock(
        return_value=httpx.Response(200, json=envelope(image()))
    )
    delete = respx.delete(f"{BATCH_BASE}/{IMAGE_ID}").mock(
        side_effect=[
            httpx.Response(200, json=envelope({})),
            httpx.Response(404, json=envelope(errors=[{"code": 5404, "message": "not found"}])),
        ]
    )
    images = client()
    assert images.get(IMAGE_ID).url == f"https://imagedelivery.net/HASH/{IMAGE_ID}/print"
    assert images.delete(IMAGE_ID) is True
    assert images.delete(IMAGE_ID) is False  # already gone: not an error
    assert set(bearer(get) + bearer(delete)) == {"Bearer batch-1"}


@respx.mock
def test_an_existing_id_is_answered_with_the_stored_image_through_the_batch_host() -> None:
    respx.get(TOKEN_URL).mock(return_value=token_answer("batch-1", T0 + 3600))
    respx.post(BATCH_BASE).mock(
        return_value=httpx.Response(
            409, json=envelope(errors=[{"code": 5409, "message": "Resource already exists"}])
        )
    )
    get = respx.get(f"{BATCH_BASE}/{IMAGE_ID}").mock(
        return_value=httpx.Response(200, json=envelope(image()))
    )
    assert client().upload(IMAGE_ID, PNG).id == IMAGE_ID and get.called


@respx.mock
def test_the_token_is_renewed_a_margin_before_it_expires() -> None:
    clock = FakeClock()
    tokens = respx.get(TOKEN_URL).mock(
        side_effect=[token_answer("batch-1", T0 + 600), token_answer("batch-2", T0 + 1200)]
    )
    gets = respx.get(f"{BATCH_BASE}/{IMAGE_ID}").mock(
        return_value=httpx.Response(200, json=envelope(image()))
    )
    images = client(clock, token_margin=60)

    images.get(IMAGE_ID)
    clock.now = T0 + 539
    images.get(IMAGE_ID)
    clock.now = T0 + 540  # 60 s before expiresAt
    images.get(IMAGE_ID)
    assert tokens.call_count == 2
    assert bearer(gets) == ["Bearer batch-1", "Bearer batch-1", "Bearer batch-2"]


@respx.mock
def test_a_short_lived_token_is_renewed_at_half_its_life() -> None:
    clock = FakeClock()
    tokens = respx.get(TOKEN_URL).mock(
        side_effect=[token_answer("batch-1", T0 + 20), token_answer("batch-2", T0 + 40)]
    )
    respx.get(f"{BATCH_BASE}/{IMAGE_ID}").mock(
        return_value=httpx.Response(200, json=envelope(image()))
    )
    images = client(clock, token_margin=60)
    images.get(IMAGE_ID)
    clock.now = T0 + 9
    images.get(IMAGE_ID)
    assert tokens.call_count == 1
    clock.now = T0 + 10
    images.get(IMAGE_ID)
    assert tokens.call_count == 2


@respx.mock
def test_a_token_refused_mid_run_is_renewed_and_the_call_retried_once() -> None:
    tokens = respx.get(TOKEN_URL).mock(
        side_effect=[token_answer("batch-1", T0 + 3600), token_answer("batch-2", T0 + 3600)]
    )
    uploads = respx.post(BATCH_BASE).mock(
        side_effect=[
            httpx.Response(200, json=envelope(image())),
            refused("Authentication error: the batch token has expired"),
            httpx.Response(200, json=envelope(image())),
            httpx.Response(200, json=envelope(image())),
        ]
    )
    images = client()
    for _ in range(3):
        images.upload(IMAGE_ID, PNG)
    assert tokens.call_count == 2
    assert bearer(uploads) == ["Bearer batch-1", "Bearer batch-1"] + ["Bearer batch-2"] * 2


@respx.mock
def test_a_403_from_the_batch_host_renews_the_token_too() -> None:
    tokens = respx.get(TOKEN_URL).mock(
        side_effect=[token_answer("batch-1", T0 + 3600), token_answer("batch-2", T0 + 3600)]
    )
    respx.delete(f"{BATCH_BASE}/{IMAGE_ID}").mock(
        side_effect=[
            httpx.Response(403, json={"code": "103", "message": "token expired"}),
            httpx.Response(200, json=envelope({})),
        ]
    )
    assert client().delete(IMAGE_ID) is True and tokens.call_count == 2


@respx.mock
def test_a_new_token_refused_again_fails_clearly_without_looping() -> None:
    tokens = respx.get(TOKEN_URL).mock(
        side_effect=[token_answer("batch-1", T0 + 3600), token_answer("batch-2", T0 + 3600)]
    )
    uploads = respx.post(BATCH_BASE).mock(return_value=refused())
    with pytest.raises(AuthenticationFailed, match="refused a newly issued batch token") as info:
        client().upload(IMAGE_ID, PNG)
    assert not info.value.retryable and info.value.status_code == 401
    assert (tokens.call_count, uploads.call_count) == (2, 2)


@respx.mock
def test_a_batch_429_waits_out_retry_after_and_a_long_one_is_retryable() -> None:
    clock = FakeClock()
    respx.get(TOKEN_URL).mock(return_value=token_answer("batch-1", T0 + 3600))
    limited = httpx.Response(
        429,
        headers={"retry-after": "2"},
        json=envelope(errors=[{"code": 971, "message": "Please wait"}]),
    )
    gets = respx.get(f"{BATCH_BASE}/{IMAGE_ID}").mock(
        side_effect=[limited, httpx.Response(200, json=envelope(image()))]
    )
    waits: list[float] = []
    images = client(clock, sleep=waits.append)
    assert images.get(IMAGE_ID).id == IMAGE_ID
    assert waits == [2.0] and gets.call_count == 2

    gets.side_effect = None
    gets.return_value = httpx.Response(
        429, headers={"retry-after": "120"}, json=envelope(errors=[{"code": 971, "message": "x"}])
    )
    with pytest.raises(RateLimited) as info:
        images.get(IMAGE_ID)
    assert info.value.retryable and info.value.retry_after == 120.0


@respx.mock
def test_batch_5xx_is_retried_and_4xx_is_not() -> None:
    respx.get(TOKEN_URL).mock(return_value=token_answer("batch-1", T0 + 3600))
    uploads = respx.post(BATCH_BASE).mock(
        side_effect=[httpx.Response(502), httpx.Response(200, json=envelope(image()))]
    )
    images = client(retry=RetryPolicy(max_attempts=3, base_delay=0))
    assert images.upload(IMAGE_ID, PNG).id == IMAGE_ID and uploads.call_count == 2

    uploads.side_effect = None
    uploads.return_value = httpx.Response(
        400, json=envelope(errors=[{"code": 5400, "message": "Bad request: bad image"}])
    )
    with pytest.raises(RequestRejected, match="bad image") as info:
        images.upload(IMAGE_ID, PNG)
    assert not info.value.retryable and uploads.call_count == 3

    uploads.return_value = httpx.Response(503)
    with pytest.raises(VendorUnavailable):
        images.upload(IMAGE_ID, PNG)


@respx.mock
def test_a_rate_limited_token_fetch_is_retryable() -> None:
    respx.get(TOKEN_URL).mock(
        return_value=httpx.Response(
            429,
            headers={"retry-after": "300"},
            json=envelope(errors=[{"code": 971, "message": "Please wait"}]),
        )
    )
    uploads = respx.post(BATCH_BASE)
    with pytest.raises(RateLimited) as info:
        client().upload(IMAGE_ID, PNG)
    assert info.value.retryable and not uploads.called


@respx.mock
def test_a_token_answer_without_a_usable_expiry_is_refused() -> None:
    respx.get(TOKEN_URL).mock(
        return_value=httpx.Response(200, json=envelope({"token": "t", "expiresAt": "soon"}))
    )
    with pytest.raises(RequestRejected, match="expiresAt"):
        client().get(IMAGE_ID)


def test_expiry_parsing_and_batch_url_rules() -> None:
    assert parse_expiry("2023-08-09T15:33:56.273411222Z") == pytest.approx(1691595236.273411)
    assert parse_expiry("2023-08-09T15:33:56") == 1691595236.0  # no zone: UTC
    with pytest.raises(ValueError, match="needs batch_url"):
        CloudflareImages(ACCOUNT, "t", base_url="http://127.0.0.1:8700/cloudflare/x")
    with pytest.raises(ValueError, match="must end with /images/v1"):
        CloudflareImages(ACCOUNT, "t", batch_url="https://batch.imagedelivery.net/")
    plain = CloudflareImages(ACCOUNT, "t", base_url="http://127.0.0.1:1/x", batch=False)
    assert plain.batch_api is None and plain.batch_tokens is None


# -- the client against the sandbox --------------------------------------------------------------
def png(color: str = "white") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), color).save(buffer, format="PNG")
    return buffer.getvalue()


def sandboxed(
    tmp_path: Path,
    *,
    behaviour: SandboxBehaviour | None = None,
    clock: FakeClock | None = None,
    client_clock: FakeClock | None = None,
    **kwargs: object,
) -> tuple[CloudflareImages, CloudflareImagesSandbox]:
    clock = clock or FakeClock()
    sandbox = CloudflareImagesSandbox(
        SandboxStore(), behaviour, storage_dir=tmp_path, clock=clock, **kwargs
    )  # type: ignore[arg-type]
    images = CloudflareImages(
        sandbox.account_id,
        sandbox.api_token,
        transport=sandbox,
        delivery_url=LocalImageUrl(tmp_path),
        sleep=clock.sleep,
        clock=client_clock or clock,
    )
    return images, sandbox


def test_batch_uploads_and_deletes_land_in_the_sandbox_store(tmp_path: Path) -> None:
    images, sandbox = sandboxed(tmp_path)
    with ThreadPoolExecutor(max_workers=16) as pool:
        hosted = list(pool.map(lambda n: images.upload(f"p/{n}.png", png()), range(40)))

    assert [h.id for h in hosted] == [f"p/{n}.png" for n in range(40)]
    assert sandbox.store.count(sandbox.IMAGES) == 40
    assert (tmp_path / "sandbox-hash" / "p" / "7.png").read_bytes() == png()
    assert sandbox.store.count(sandbox.BATCH_TOKENS) == 1, "one token for the whole run"
    assert sandbox.request_count == 41

    assert images.upload("p/7.png", png("red")).id == "p/7.png"  # a replay: the stored image
    assert (tmp_path / "sandbox-hash" / "p" / "7.png").read_bytes() == png()
    assert images.delete("p/7.png") is True and images.delete("p/7.png") is False
    assert not (tmp_path / "sandbox-hash" / "p" / "7.png").exists()
    assert sandbox.store.count(sandbox.IMAGES) == 39


def test_plain_and_batch_clients_see_the_same_images(tmp_path: Path) -> None:
    batch, sandbox = sandboxed(tmp_path)
    plain = CloudflareImages(sandbox.account_id, sandbox.api_token, transport=sandbox, batch=False)
    batch.upload(IMAGE_ID, png())
    assert plain.get(IMAGE_ID).id == IMAGE_ID
    assert plain.delete(IMAGE_ID) is True
    assert batch.delete(IMAGE_ID) is False


def test_an_expired_token_is_refused_then_renewed_and_the_call_retried(tmp_path: Path) -> None:
    # The client's clock lags the vendor's: it still trusts a token the vendor has expired.
    vendor_clock, client_clock = FakeClock(), FakeClock()
    images, sandbox = sandboxed(
        tmp_path, clock=vendor_clock, client_clock=client_clock, batch_token_seconds=30
    )
    images.upload("a.png", png())
    vendor_clock.now += 31
    images.upload("b.png", png())

    assert sandbox.store.count(sandbox.IMAGES) == 2
    assert images.batch_tokens is not None and images.batch_tokens.fetched == 2
    assert sandbox.request_count == 5  # token, a, b (401: expired), token, b


def test_the_sandbox_refuses_expired_unknown_and_missing_batch_tokens(tmp_path: Path) -> None:
    clock = FakeClock()
    sandbox = CloudflareImagesSandbox(storage_dir=tmp_path, clock=clock, batch_token_seconds=30)
    with httpx.Client(transport=sandbox) as raw:
        issued = raw.get(
            "https://api.cloudflare.com/client/v4/accounts/sandbox-account/images/v1/batch_token",
            headers={"authorization": "Bearer sandbox-cloudflare-token"},
        ).json()["result"]
        assert parse_expiry(issued["expiresAt"]) == pytest.approx(T0 + 30)

        def get(token: str | None) -> httpx.Response:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            return raw.get(f"{BATCH_BASE}/x.png", headers=headers)

        assert get(issued["token"]).status_code == 404  # accepted; no such image
        clock.now += 30
        expired = get(issued["token"])
        for answer, says in (
            (expired, "expired"),
            (get("made-up"), "unknown"),
            (get("sandbox-cloudflare-token"), "unknown"),  # the API token is no batch token
            (get(None), "required"),
        ):
            body = answer.json()
            assert answer.status_code == 401 and body["success"] is False
            assert body["errors"][0]["code"] == 10000 and says in body["errors"][0]["message"]


def test_the_rate_limit_applies_per_token_and_a_batch_token_is_not_locked_out(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    images, sandbox = sandboxed(
        tmp_path, behaviour=SandboxBehaviour(rate_limit=(2, 1.0)), clock=clock
    )
    images.upload("a.png", png())  # the token fetch counts in the API token's window only
    images.upload("b.png", png())
    started = clock.now
    images.upload("c.png", png())  # 429 retry-after 1 (no 5-minute lockout), then accepted
    assert clock.now - started == 1.0
    assert sandbox.store.count(sandbox.IMAGES) == 3
    assert sandbox.store.get(sandbox.LOCKOUT, sandbox.api_token) is None

    with httpx.Client(transport=sandbox) as raw:
        token = images.batch_tokens.current() if images.batch_tokens else ""
        raw.get(f"{BATCH_BASE}/a.png", headers={"authorization": f"Bearer {token}"})
        answer = raw.get(f"{BATCH_BASE}/a.png", headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 429 and answer.headers["retry-after"] == "1"
    assert answer.json()["errors"][0]["code"] == 971


def test_the_global_lockout_does_not_stop_the_batch_host(tmp_path: Path) -> None:
    clock = FakeClock()
    images, sandbox = sandboxed(
        tmp_path, behaviour=SandboxBehaviour(rate_limit=(1, 10.0)), clock=clock
    )
    images.upload("a.png", png())  # the token took the API token's only slot
    plain = CloudflareImages(
        sandbox.account_id,
        sandbox.api_token,
        transport=sandbox,
        batch=False,
        retry=RetryPolicy(max_attempts=1),
    )
    with pytest.raises(RateLimited):
        plain.get("a.png")  # the API token is now locked out for 5 minutes
    clock.now += 10
    assert images.get("a.png").id == "a.png"


# -- through the sandbox HTTP server -------------------------------------------------------------
@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, ServerConfig]]:
    http = SandboxHTTPServer(("127.0.0.1", 0))
    config = ServerConfig(
        store_path=str(tmp_path / "sandbox.sqlite"),
        image_dir=str(tmp_path / "images"),
        public_url=http.url,
    )
    http.vendors = SandboxVendors(config)
    loop = threading.Thread(target=http.serve_forever, daemon=True)
    loop.start()
    try:
        yield http.url, config
    finally:
        http.shutdown()
        http.server_close()
        loop.join(timeout=5)


@pytest.mark.parametrize("batch", [True, False])
def test_the_sandbox_server_serves_the_batch_host_under_its_cloudflare_mount(
    server: tuple[str, ServerConfig], batch: bool
) -> None:
    url, config = server
    host = SandboxImageHost(
        sandbox_path=config.store_path,
        image_dir=config.image_dir,
        sandbox_url=url,
        batch_api=batch,
    )
    images = host.client()
    assert (images.batch_api is not None) is batch
    hosted = images.upload("proofs/server/front.png", png())
    store = SandboxStore(config.store_path)
    assert hosted.id == "proofs/server/front.png"
    assert store.get(CloudflareImagesSandbox.IMAGES, "proofs/server/front.png") is not None
    assert (Path(config.image_dir) / "sandbox-hash" / "proofs/server/front.png").exists()
    assert store.count(CloudflareImagesSandbox.BATCH_TOKENS) == (1 if batch else 0)
    assert images.delete("proofs/server/front.png") is True
    assert store.get(CloudflareImagesSandbox.IMAGES, "proofs/server/front.png") is None
