"""The image host resources build the Cloudflare Images client for the batch API by default."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from mail_pipeline.definitions import production_resources
from mail_pipeline.integrations.images.cloudflare import BATCH_BASE, RATE_LIMIT
from mail_pipeline.integrations.images.sandbox import CloudflareImagesSandbox
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.resources.images import CloudflareImageHost, SandboxImageHost
from mail_pipeline.settings import load_settings
from tests.environments import PRODUCTION


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), "white").save(buffer, "PNG")
    return buffer.getvalue()


def _host(**kwargs: object) -> CloudflareImageHost:
    return CloudflareImageHost(
        account_id="acc",
        api_token="token",
        account_hash="hash",
        proof_id_key="key",
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_cloudflare_host_uses_the_batch_api_unless_told_not_to() -> None:
    images = _host().client()  # builds without touching the network
    assert images.batch_api is not None and images.batch_tokens is not None
    assert images.batch_api.base_url + "/images/v1" == BATCH_BASE
    assert images.batch_tokens.fetched == 0, "the token is fetched on first use"
    # The global API's limiter paces the token fetches (and every call of the plain API).
    assert images.api.limiter is not None
    assert images.api.limiter.capacity == int(RATE_LIMIT[0] * 0.9)

    plain = _host(batch_api=False).client()
    assert plain.batch_api is None and plain.api.limiter is not None


def test_production_binds_the_batch_api() -> None:
    image_host = production_resources(load_settings(PRODUCTION))["image_host"]
    assert isinstance(image_host, CloudflareImageHost) and image_host.batch_api


def test_the_in_process_sandbox_host_serves_the_batch_api(tmp_path: Path) -> None:
    store_path = str(tmp_path / "s.sqlite")
    host = SandboxImageHost(sandbox_path=store_path, image_dir=str(tmp_path / "images"))
    images = host.client()
    images.upload("proofs/c1/r1/abc/front.png", _png(), {})
    assert images.delete("proofs/c1/r1/abc/front.png") is True

    store = SandboxStore(store_path)
    assert store.count(CloudflareImagesSandbox.BATCH_TOKENS) == 1
    assert store.count(CloudflareImagesSandbox.IMAGES) == 0
