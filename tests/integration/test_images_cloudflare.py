"""The Cloudflare Images client against Cloudflare's documented request and answer shapes,
over the plain (global) API."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import respx

from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    NotFound,
    RateLimited,
    RequestRejected,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.images.cloudflare import (
    MAX_IMAGE_BYTES,
    CloudflareImages,
    proof_image_id,
)

ACCOUNT = "acc123"
API = f"https://api.cloudflare.com/client/v4/accounts/{ACCOUNT}/images/v1"
IMAGE_ID = "proofs/c3/r7/0123456789abcdef/front.png"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def envelope(
    result: object = None, *, errors: list[dict[str, object]] | None = None, success: bool = True
) -> dict[str, object]:
    return {"result": result, "success": success, "errors": errors or [], "messages": []}


def image(image_id: str = IMAGE_ID) -> dict[str, object]:
    return {
        "id": image_id,
        "filename": "front.png",
        "metadata": {"recipient_id": 7},
        "uploaded": "2026-01-31T16:39:28.458Z",
        "requireSignedURLs": False,
        "variants": [
            f"https://imagedelivery.net/Vi7wi5KSItxGFsWRG2Us6Q/{image_id}/public",
            f"https://imagedelivery.net/Vi7wi5KSItxGFsWRG2Us6Q/{image_id}/print",
        ],
    }


def client(**kwargs: object) -> CloudflareImages:
    """A client of the plain API (the batch API's tests are in test_images_batch.py)."""
    kwargs.setdefault("sleep", lambda s: None)
    kwargs.setdefault("batch", False)
    return CloudflareImages(ACCOUNT, "cf-token", **kwargs)  # type: ignore[arg-type]


def form_fields(request: httpx.Request) -> dict[str, bytes]:
    boundary = re.search(r"boundary=(\S+)", request.headers["content-type"])
    assert boundary is not None
    fields = {}
    for part in request.content.split(b"--" + boundary.group(1).encode())[1:-1]:
        head, _, data = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head)
        assert name is not None
        fields[name.group(1).decode()] = data[:-2]
    return fields


@respx.mock
def test_upload_is_multipart_with_the_custom_id_and_metadata() -> None:
    route = respx.post(API).mock(return_value=httpx.Response(200, json=envelope(image())))
    hosted = client().upload(IMAGE_ID, PNG, {"recipient_id": 7, "side": "front"})

    sent = route.calls.last.request
    sent.read()
    assert sent.headers["authorization"] == "Bearer cf-token"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    fields = form_fields(sent)
    assert fields["id"] == IMAGE_ID.encode()
    assert json.loads(fields["metadata"]) == {"recipient_id": 7, "side": "front"}
    assert fields["requireSignedURLs"] == b"false"
    assert fields["file"] == PNG
    assert b'filename="front.png"' in sent.content and b"Content-Type: image/png" in sent.content
    assert hosted.id == IMAGE_ID
    assert hosted.url == f"https://imagedelivery.net/Vi7wi5KSItxGFsWRG2Us6Q/{IMAGE_ID}/print"
    assert hosted.metadata == {"recipient_id": 7}


@respx.mock
def test_upload_of_an_existing_id_gets_the_stored_image() -> None:
    respx.post(API).mock(
        return_value=httpx.Response(
            409,
            json=envelope(
                success=False, errors=[{"code": 5409, "message": "Resource already exists"}]
            ),
        )
    )
    get = respx.get(f"{API}/{IMAGE_ID}").mock(
        return_value=httpx.Response(200, json=envelope(image()))
    )
    hosted = client().upload(IMAGE_ID, PNG)
    assert get.called and hosted.id == IMAGE_ID


@respx.mock
def test_already_exists_is_recognised_by_message_whatever_the_status() -> None:
    respx.post(API).mock(
        return_value=httpx.Response(
            400,
            json=envelope(
                success=False,
                errors=[{"code": 5400, "message": "Image with that ID already exists"}],
            ),
        )
    )
    respx.get(f"{API}/{IMAGE_ID}").mock(return_value=httpx.Response(200, json=envelope(image())))
    assert client().upload(IMAGE_ID, PNG).id == IMAGE_ID


@respx.mock
def test_delete_and_delete_of_a_missing_image() -> None:
    route = respx.delete(f"{API}/{IMAGE_ID}").mock(
        side_effect=[
            httpx.Response(200, json=envelope({})),
            httpx.Response(
                404,
                json=envelope(success=False, errors=[{"code": 5404, "message": "Image not found"}]),
            ),
        ]
    )
    assert client().delete(IMAGE_ID) is True
    assert client().delete(IMAGE_ID) is False
    assert route.calls.last.request.headers["authorization"] == "Bearer cf-token"


@respx.mock
def test_get_missing_and_auth_errors_are_typed() -> None:
    respx.get(f"{API}/{IMAGE_ID}").mock(
        side_effect=[
            httpx.Response(
                404,
                json=envelope(success=False, errors=[{"code": 5404, "message": "Image not found"}]),
            ),
            httpx.Response(
                403,
                json=envelope(
                    success=False, errors=[{"code": 10000, "message": "Authentication error"}]
                ),
            ),
        ]
    )
    with pytest.raises(NotFound, match="Image not found"):
        client().get(IMAGE_ID)
    with pytest.raises(AuthenticationFailed, match="Authentication error") as info:
        client().get(IMAGE_ID)
    assert info.value.code == "10000"


@respx.mock
def test_429_honours_retry_after_then_gives_up_as_rate_limited() -> None:
    waits: list[float] = []
    limited = httpx.Response(
        429,
        headers={"retry-after": "3"},
        json=envelope(success=False, errors=[{"code": 971, "message": "Please wait"}]),
    )
    respx.get(f"{API}/{IMAGE_ID}").mock(
        side_effect=[
            limited,
            httpx.Response(200, json=envelope(image())),
        ]
    )
    assert client(sleep=waits.append).get(IMAGE_ID).id == IMAGE_ID
    assert waits == [3.0]
    respx.get(f"{API}/{IMAGE_ID}").mock(
        return_value=httpx.Response(
            429, headers={"retry-after": "300"}, json=envelope(success=False, errors=[])
        )
    )
    with pytest.raises(RateLimited) as info:
        client(retry=RetryPolicy(max_attempts=3)).get(IMAGE_ID)
    assert info.value.retry_after == 300.0


@respx.mock
def test_url_is_built_from_the_account_hash_when_the_variant_is_not_listed() -> None:
    listed = image()
    listed["variants"] = [f"https://imagedelivery.net/HASH/{IMAGE_ID}/public"]
    respx.get(f"{API}/{IMAGE_ID}").mock(return_value=httpx.Response(200, json=envelope(listed)))
    assert client().get(IMAGE_ID).url == f"https://imagedelivery.net/HASH/{IMAGE_ID}/print"
    assert client(delivery_url=lambda i, v: f"file:///x/{i}?{v}").get(IMAGE_ID).url == (
        f"file:///x/{IMAGE_ID}?print"
    )


def test_bad_uploads_are_refused_before_sending() -> None:
    never = httpx.MockTransport(lambda r: pytest.fail("nothing should be sent"))
    with pytest.raises(RequestRejected, match="limit is 10485760"):
        client(transport=never).upload(IMAGE_ID, b"\x89PNG" + b"0" * MAX_IMAGE_BYTES)
    with pytest.raises(RequestRejected, match=r"metadata .* limit is 1024"):
        client(transport=never).upload(IMAGE_ID, PNG, {"x": "y" * 2000})
    with pytest.raises(RequestRejected, match=r"'\.\.'"):
        client(transport=never).upload("proofs/../secrets.png", PNG)


def test_proof_image_ids_are_stable_and_unguessable_without_the_key() -> None:
    front = proof_image_id("key-1", 3, 7, "0123456789abcdef", "front")
    assert front == proof_image_id("key-1", 3, 7, "0123456789abcdef", "front")
    assert re.fullmatch(r"proofs/[0-9a-f]{40}/front\.png", front)
    assert "/r7/" not in front and "/c3/" not in front, "no recipient or campaign id in the URL"
    assert proof_image_id("key-2", 3, 7, "0123456789abcdef", "front") != front
    assert proof_image_id("key-1", 3, 8, "0123456789abcdef", "front") != front
    back = proof_image_id("key-1", 3, 7, "0123456789abcdef", "back")
    assert back.removesuffix("back.png") == front.removesuffix("front.png")
    with pytest.raises(ValueError, match="need a key"):
        proof_image_id("", 3, 7, "0123456789abcdef", "front")
