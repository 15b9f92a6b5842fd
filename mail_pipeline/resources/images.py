"""Image hosting (Cloudflare Images) as a resource."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from mail_pipeline.integrations.images.cloudflare import (
    API_BASE,
    CloudflareImages,
    default_limiter,
)
from mail_pipeline.integrations.images.sandbox import (
    SANDBOX_ACCOUNT_ID,
    SANDBOX_API_TOKEN,
    CloudflareImagesSandbox,
    LocalImageUrl,
)
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.resources.sandbox import shared_store


class ImageHostResource(dg.ConfigurableResource):
    #: The secret key proof image ids are derived with (``proof_image_id``): without it a
    #: proof's URL cannot be guessed.
    proof_id_key: str
    #: Uploads, gets and deletes through Cloudflare's batch API, which the global limit of
    #: 1,200 requests per 5 minutes does not count; False: the plain API (under that limit).
    batch_api: bool = True
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
            self.account_id,
            self.api_token,
            variant=self.variant,
            account_hash=self.account_hash,
            batch=self.batch_api,
            limiter=default_limiter(),
        )


class SandboxImageHost(ImageHostResource):
    """Uploaded proofs are files under ``image_dir``; their URLs are ``file://`` links, or
    ``public_base_url`` links when a static file server serves ``image_dir`` (``make run``
    starts one). With ``sandbox_url``, ``image_dir`` must be the server's ``--image-dir``."""

    sandbox_path: str
    #: The sandbox server (``integrations.sandbox.server``) to talk to over the network, e.g.
    #: ``http://127.0.0.1:8700``; None: the sandbox runs in this process over ``sandbox_path``.
    #: With a server, latency and failures are the server's settings, not these.
    sandbox_url: str | None = None
    image_dir: str
    proof_id_key: str = "sandbox-proof-id-key"
    public_base_url: str | None = None
    latency_seconds: float = 0.0
    failure_rate: float = 0.0

    def build(self) -> CloudflareImages:
        storage = Path(self.image_dir)
        if self.sandbox_url:
            server = self.sandbox_url.rstrip("/")
            api = API_BASE.format(account_id=SANDBOX_ACCOUNT_ID).removeprefix("https://")
            return CloudflareImages(
                SANDBOX_ACCOUNT_ID,
                SANDBOX_API_TOKEN,
                base_url=f"{server}/cloudflare/{api.partition('/')[2]}",
                batch=self.batch_api,
                # The server serves the batch host under the same mount (``/cloudflare``).
                batch_url=f"{server}/cloudflare/batch/images/v1",
                delivery_url=LocalImageUrl(storage, base_url=self.public_base_url),
            )
        sandbox = CloudflareImagesSandbox(
            shared_store(self.sandbox_path),
            SandboxBehaviour(latency_seconds=self.latency_seconds, failure_rate=self.failure_rate),
            storage_dir=storage,
        )
        # The transport answers the batch host too, at its real URL.
        return CloudflareImages(
            sandbox.account_id,
            sandbox.api_token,
            transport=sandbox,
            batch=self.batch_api,
            delivery_url=LocalImageUrl(storage, base_url=self.public_base_url),
        )
