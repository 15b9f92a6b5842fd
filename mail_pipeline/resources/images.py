"""Image hosting (Cloudflare Images) as a resource."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from mail_pipeline.integrations.images.cloudflare import CloudflareImages
from mail_pipeline.integrations.images.sandbox import CloudflareImagesSandbox, LocalImageUrl
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.resources.sandbox import shared_store


class ImageHostResource(dg.ConfigurableResource):
    #: The secret key proof image ids are derived with (``proof_image_id``): without it a
    #: proof's URL cannot be guessed.
    proof_id_key: str
    _client: CloudflareImages | None = PrivateAttr(default=None)

    @abstractmethod
    def build(self) -> CloudflareImages: ...

    def client(self) -> CloudflareImages:
        if self._client is None:
            self._client = self.build()
        return self._client


class CloudflareImageHost(ImageHostResource):
    account_id: str
    api_token: str
    #: The delivery hash from the variant URLs (it is not the account id).
    account_hash: str
    variant: str = "print"

    def build(self) -> CloudflareImages:
        return CloudflareImages(
            self.account_id, self.api_token, variant=self.variant, account_hash=self.account_hash
        )


class SandboxImageHost(ImageHostResource):
    """Uploaded proofs are files under ``image_dir``; their URLs are ``file://`` links, or
    ``public_base_url`` links when a static file server serves ``image_dir`` (``make run``
    starts one)."""

    sandbox_path: str
    image_dir: str
    proof_id_key: str = "sandbox-proof-id-key"
    public_base_url: str | None = None
    latency_seconds: float = 0.0
    failure_rate: float = 0.0

    def build(self) -> CloudflareImages:
        storage = Path(self.image_dir)
        sandbox = CloudflareImagesSandbox(
            shared_store(self.sandbox_path),
            SandboxBehaviour(latency_seconds=self.latency_seconds, failure_rate=self.failure_rate),
            storage_dir=storage,
        )
        return CloudflareImages(
            sandbox.account_id,
            sandbox.api_token,
            transport=sandbox,
            delivery_url=LocalImageUrl(storage, base_url=self.public_base_url),
        )
