"""Address enrichment as a resource: the Faraday client in production, the same client on
the sandbox Faraday locally (``integrations.enrichment``). Building it touches nothing; each
use opens a client the caller closes."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from mail_pipeline.integrations.enrichment.base import AddressEnricher
from mail_pipeline.integrations.enrichment.faraday import FaradayEnricher
from mail_pipeline.integrations.enrichment.sandbox import SANDBOX_API_KEY, FaradaySandbox
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.resources.sandbox import shared_store

PROVIDER = "faraday"


class AddressEnrichmentResource(dg.ConfigurableResource):
    @abstractmethod
    def _client(self) -> AddressEnricher: ...

    @contextmanager
    def enricher(self) -> Iterator[AddressEnricher]:
        client = self._client()
        try:
            yield client
        finally:
            client.close()


class FaradayAddressEnrichment(AddressEnrichmentResource):
    api_key: str

    def _client(self) -> AddressEnricher:
        return FaradayEnricher(self.api_key)


class SandboxAddressEnrichment(AddressEnrichmentResource):
    """The sandbox Faraday over the shared sandbox file: a batch is ready
    ``ready_after_seconds`` after it was submitted and matches about ``match_rate`` of the
    people (by their email)."""

    sandbox_path: str
    #: The sandbox server (``integrations.sandbox.server``) to talk to over the network, e.g.
    #: ``http://127.0.0.1:8700``; None: the sandbox runs in this process over ``sandbox_path``.
    #: With a server, readiness, match rate and latency are the server's settings, not these.
    sandbox_url: str | None = None
    ready_after_seconds: float = 120.0
    match_rate: float = 0.7
    latency_seconds: float = 0.0

    def _client(self) -> AddressEnricher:
        if self.sandbox_url:
            return FaradayEnricher(
                SANDBOX_API_KEY, base_url=f"{self.sandbox_url.rstrip('/')}/faraday/v1"
            )
        transport = FaradaySandbox(
            shared_store(self.sandbox_path),
            SandboxBehaviour(latency_seconds=self.latency_seconds),
            ready_after_seconds=self.ready_after_seconds,
            match_rate=self.match_rate,
        )
        return FaradayEnricher(SANDBOX_API_KEY, transport=transport)
