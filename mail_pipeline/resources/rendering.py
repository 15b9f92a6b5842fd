"""Proof rendering as a resource: the renderers in the configured fallback order."""

from __future__ import annotations

from abc import abstractmethod

import dagster as dg
from pydantic import PrivateAttr

from mail_pipeline.integrations.renderer.backup import BackupRenderer
from mail_pipeline.integrations.renderer.chain import (
    FallbackRenderer,
    Renderer,
    build_fallback_order,
)
from mail_pipeline.integrations.renderer.gateway import GatewayRenderer
from mail_pipeline.integrations.renderer.pixelixe import (
    PixelixeRenderer,
    parse_documents,
)
from mail_pipeline.integrations.renderer.sandbox import (
    DEFAULT_PIXELIXE_DOCUMENTS,
    SANDBOX_GATEWAY_TOKEN,
    SANDBOX_PIXELIXE_KEY,
    PixelixeSandbox,
    RenderingGatewaySandbox,
    sandbox_documents,
)
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.resources.sandbox import shared_store

GATEWAY_URL = "https://render-gateway.internal"


class RenderingResource(dg.ConfigurableResource):
    #: Renderer names in the order they are tried: "gateway", "pixelixe", "backup".
    fallback_order: list[str] = ["gateway", "backup"]
    _renderer: FallbackRenderer | None = PrivateAttr(default=None)

    @abstractmethod
    def available(self) -> dict[str, Renderer]: ...

    def renderer(self) -> FallbackRenderer:
        if self._renderer is None:
            self._renderer = FallbackRenderer(
                build_fallback_order(self.fallback_order, self.available())
            )
        return self._renderer


class LiveRendering(RenderingResource):
    gateway_url: str = GATEWAY_URL
    gateway_token: str | None = None
    pixelixe_api_key: str | None = None
    #: JSON: template -> size -> {"front": document uid, "back": document uid}
    pixelixe_documents: str = "{}"

    def available(self) -> dict[str, Renderer]:
        renderers: dict[str, Renderer] = {"backup": BackupRenderer()}
        if self.gateway_token:
            renderers["gateway"] = GatewayRenderer(self.gateway_url, self.gateway_token)
        if self.pixelixe_api_key:
            renderers["pixelixe"] = PixelixeRenderer(
                self.pixelixe_api_key, parse_documents(self.pixelixe_documents)
            )
        return renderers


class SandboxRendering(RenderingResource):
    """The gateway and Pixelixe sandboxes draw real proofs with the backup generator."""

    sandbox_path: str
    #: The sandbox server (``integrations.sandbox.server``) to talk to over the network, e.g.
    #: ``http://127.0.0.1:8700``; None: the sandbox runs in this process over ``sandbox_path``.
    #: With a server, latency, failures and Pixelixe's documents are the server's settings.
    sandbox_url: str | None = None
    latency_seconds: float = 0.0
    failure_rate: float = 0.0
    pixelixe_documents: str = DEFAULT_PIXELIXE_DOCUMENTS

    def available(self) -> dict[str, Renderer]:
        if self.sandbox_url:
            server = self.sandbox_url.rstrip("/")
            return {
                "gateway": GatewayRenderer(f"{server}/renderer", SANDBOX_GATEWAY_TOKEN),
                "pixelixe": PixelixeRenderer(
                    SANDBOX_PIXELIXE_KEY,
                    parse_documents(self.pixelixe_documents),
                    base_url=f"{server}/pixelixe",
                ),
                "backup": BackupRenderer(),
            }
        store = shared_store(self.sandbox_path)
        behaviour = SandboxBehaviour(
            latency_seconds=self.latency_seconds, failure_rate=self.failure_rate
        )
        gateway = RenderingGatewaySandbox(store, behaviour)
        documents = parse_documents(self.pixelixe_documents)
        pixelixe = PixelixeSandbox(store, behaviour, documents=sandbox_documents(documents))
        return {
            "gateway": GatewayRenderer(GATEWAY_URL, gateway.token, transport=gateway),
            "pixelixe": PixelixeRenderer(pixelixe.api_key, documents, transport=pixelixe),
            "backup": BackupRenderer(),
        }
