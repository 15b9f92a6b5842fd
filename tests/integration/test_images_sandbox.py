"""The real Cloudflare Images client against the file-backed sandbox.

Over the plain API unless a test says ``batch``; the batch API's own behaviour (tokens, their
expiry, its rate limit) is tested in test_images_batch.py."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    NotFound,
    RateLimited,
    RequestRejected,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.images.cloudflare import CloudflareImages
from mail_pipeline.integrations.images.sandbox import (
    CloudflareImagesSandbox,
    LocalImageUrl,
    parse_multipart,
)
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour

IMAGE_ID = "proofs/c3/r7/0123456789abcdef/front.png"


def png(color: str = "white", size: tuple[int, int] = (60, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def setup(
    tmp_path: Path,
    *,
    behaviour: SandboxBehaviour | None = None,
    clock: FakeClock | None = None,
    batch: bool = False,
    **kwargs: object,
) -> tuple[CloudflareImages, CloudflareImagesSandbox]:
    clock = clock or FakeClock()
    sandbox = CloudflareImagesSandbox(
        SandboxStore(), behaviour, storage_dir=tmp_path, clock=clock, **kwargs
    )  # type: ignore[arg-type]
    client = CloudflareImages(
        "sandbox-account",
        "sandbox-cloudflare-token",
        transport=sandbox,
        delivery_url=LocalImageUrl(tmp_path),
        sleep=clock.sleep,
        clock=clock,
        batch=batch,
    )
    return client, sandbox


def stored_file(tmp_path: Path, image_id: str = IMAGE_ID) -> Path:
    return tmp_path / "sandbox-hash" / image_id


@pytest.mark.parametrize("batch", [False, True])
def test_upload_stores_a_file_a_person_can_open(tmp_path: Path, batch: bool) -> None:
    client, sandbox = setup(tmp_path, batch=batch)
    hosted = client.upload(IMAGE_ID, png("red"), {"recipient_id": 7})
    path = stored_file(tmp_path)
    assert path.read_bytes() == png("red")
    assert hosted.url == path.resolve().as_uri()
    assert hosted.metadata == {"recipient_id": 7}
    # The API answer keeps Cloudflare's delivery URL shape.
    assert hosted.variants[-1] == f"https://imagedelivery.net/sandbox-hash/{IMAGE_ID}/print"
    assert sandbox.store.get(sandbox.IMAGES, IMAGE_ID) is not None


@pytest.mark.parametrize("batch", [False, True])
def test_upload_twice_with_the_same_id_keeps_one_image(tmp_path: Path, batch: bool) -> None:
    client, sandbox = setup(tmp_path, batch=batch)
    first = client.upload(IMAGE_ID, png("red"), {"n": 1})
    second = client.upload(IMAGE_ID, png("blue"), {"n": 2})
    assert second == first  # the stored image answers the replay
    assert sandbox.store.count(sandbox.IMAGES) == 1
    assert stored_file(tmp_path).read_bytes() == png("red")
    assert sandbox.request_count == 3 + batch  # (the batch token,) POST, POST (409), GET


@pytest.mark.parametrize("batch", [False, True])
def test_delete_removes_the_file_and_deleting_twice_is_fine(tmp_path: Path, batch: bool) -> None:
    client, _ = setup(tmp_path, batch=batch)
    client.upload(IMAGE_ID, png())
    assert client.delete(IMAGE_ID) is True
    assert not stored_file(tmp_path).exists()
    assert not (tmp_path / "sandbox-hash" / "proofs").exists()  # empty folders pruned
    assert client.delete(IMAGE_ID) is False
    with pytest.raises(NotFound):
        client.get(IMAGE_ID)


def test_lost_upload_response_is_retried_into_one_image(tmp_path: Path) -> None:
    # Seed 7 loses the first answer only: the upload was stored, the client timed out.
    client, sandbox = setup(tmp_path, behaviour=SandboxBehaviour(lost_response_rate=0.5, seed=7))
    hosted = client.upload(IMAGE_ID, png())
    assert hosted.id == IMAGE_ID
    assert sandbox.store.count(sandbox.IMAGES) == 1
    assert sandbox.request_count == 3  # POST (lost), POST (409: already exists), GET


def test_429_then_success_after_the_lockout(tmp_path: Path) -> None:
    clock = FakeClock()
    client, sandbox = setup(
        tmp_path, behaviour=SandboxBehaviour(rate_limit=(2, 1.0)), clock=clock, lockout_seconds=5
    )
    client.upload("a.png", png())
    client.upload("b.png", png())
    started = clock.now
    client.upload("c.png", png())  # 429 retry-after 5, waited, then accepted
    assert clock.now - started == 5.0
    assert sandbox.store.count(sandbox.IMAGES) == 3
    assert sandbox.request_count == 4


def test_lockout_longer_than_the_retry_budget_is_rate_limited(tmp_path: Path) -> None:
    clock = FakeClock()
    sandbox = CloudflareImagesSandbox(
        behaviour=SandboxBehaviour(rate_limit=(1, 10.0)), storage_dir=tmp_path, clock=clock
    )
    client = CloudflareImages(
        "sandbox-account",
        "sandbox-cloudflare-token",
        transport=sandbox,
        sleep=clock.sleep,
        retry=RetryPolicy(max_attempts=3),
        batch=False,
    )
    client.upload("a.png", png())
    with pytest.raises(RateLimited) as info:
        client.get("a.png")
    assert info.value.retry_after == 300.0  # Cloudflare's five-minute lockout
    with httpx.Client(transport=sandbox) as raw:
        answer = raw.get(
            "https://api.cloudflare.com/client/v4/accounts/sandbox-account/images/v1/a.png",
            headers={"authorization": "Bearer sandbox-cloudflare-token"},
        )
    assert answer.status_code == 429
    assert answer.headers["ratelimit-policy"] == '"default";q=1200;w=300'
    assert answer.json()["errors"][0]["code"] == 971


def test_files_over_10_mb_and_non_images_are_refused(tmp_path: Path) -> None:
    client, sandbox = setup(tmp_path, max_bytes=1000)
    with pytest.raises(RequestRejected, match="maximum size") as info:
        client.upload("big.png", png(size=(400, 400)) + b"\x00" * 1000)
    assert info.value.status_code == 413
    with pytest.raises(RequestRejected, match="PNG, JPEG, GIF or WebP"):
        client.upload("notes.png", b"just text, not an image")
    assert sandbox.store.count(sandbox.IMAGES) == 0
    assert not any(tmp_path.rglob("*.png"))


def test_wrong_token_is_an_authentication_error(tmp_path: Path) -> None:
    sandbox = CloudflareImagesSandbox(storage_dir=tmp_path)
    client = CloudflareImages("sandbox-account", "wrong-token", transport=sandbox)
    with pytest.raises(AuthenticationFailed, match="Authentication error"):
        client.upload(IMAGE_ID, png())


@pytest.mark.parametrize("batch", [False, True])
def test_sandbox_5xx_is_retried(tmp_path: Path, batch: bool) -> None:
    client, sandbox = setup(
        tmp_path, behaviour=SandboxBehaviour(failure_rate=0.5, seed=3), batch=batch
    )
    for api in (client.api, client.batch_api):
        if api is not None:
            api.retry = RetryPolicy(max_attempts=10, base_delay=0)
    client.upload(IMAGE_ID, png())
    assert stored_file(tmp_path).exists() and sandbox.request_count > 1


def test_state_is_shared_through_the_store(tmp_path: Path) -> None:
    store = SandboxStore(tmp_path / "sandbox.sqlite")
    one = CloudflareImagesSandbox(store, storage_dir=tmp_path / "images")
    other = CloudflareImagesSandbox(
        SandboxStore(tmp_path / "sandbox.sqlite"), storage_dir=tmp_path / "images"
    )
    CloudflareImages("sandbox-account", "sandbox-cloudflare-token", transport=one).upload(
        IMAGE_ID, png()
    )
    seen = CloudflareImages("sandbox-account", "sandbox-cloudflare-token", transport=other)
    assert seen.get(IMAGE_ID).id == IMAGE_ID


def test_local_image_url(tmp_path: Path) -> None:
    urls = LocalImageUrl(tmp_path, "h")
    assert urls.path_for("a/b.png") == tmp_path / "h" / "a" / "b.png"
    assert urls.path_for("a/b") == tmp_path / "h" / "a" / "b.png"
    served = LocalImageUrl(tmp_path, "h", base_url="http://127.0.0.1:8000/")
    assert served("a/b.png", "print") == "http://127.0.0.1:8000/h/a/b.png"
    with pytest.raises(ValueError, match=r"'\.\.'"):
        urls.path_for("../escape.png")


def test_parse_multipart_keeps_binary_bytes_exactly() -> None:
    data = png() + b"\r\n--not-the-boundary\r\n"
    request = httpx.Request(
        "POST", "https://x", files={"file": ("f.png", data, "image/png")}, data={"id": "x.png"}
    )
    fields = parse_multipart(request.headers["content-type"], request.read())
    assert fields["file"] == ("f.png", data)
    assert fields["id"] == (None, b"x.png")


def test_wrong_account_id_is_not_mistaken_for_a_missing_image(tmp_path: Path) -> None:
    sandbox = CloudflareImagesSandbox(storage_dir=tmp_path)
    client = CloudflareImages("other-account", "sandbox-cloudflare-token", transport=sandbox)
    with pytest.raises(RequestRejected, match="Could not route") as info:
        client.delete(IMAGE_ID)
    assert info.value.code == "7003" and not isinstance(info.value, NotFound)
