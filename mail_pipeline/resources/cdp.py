"""The CDP (Klaviyo) as a resource: a client per organization integration.

``KlaviyoCdp`` resolves the organization's ``secret_ref`` when a run needs it;
``SandboxCdp`` talks to the Klaviyo sandbox. Both read segments the same way.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator

import dagster as dg

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.integrations.klaviyo.client import DEFAULT_REVISION, KlaviyoClient
from mail_pipeline.integrations.klaviyo.models import ProfilePage
from mail_pipeline.integrations.klaviyo.sandbox import SANDBOX_API_KEY, KlaviyoSandbox
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.integrations.secrets import resolve_secret
from mail_pipeline.resources.sandbox import shared_store


class CdpResource(dg.ConfigurableResource):
    """Reads campaign segments and receives postcard events."""

    page_size: int = 100

    @abstractmethod
    def client_for(self, integration: IntegrationRef) -> KlaviyoClient: ...

    def segment_pages(self, integration: IntegrationRef, segment_id: str) -> Iterator[ProfilePage]:
        with self.client_for(integration) as client:
            yield from client.iter_segment_profiles(segment_id, self.page_size)


class KlaviyoCdp(CdpResource):
    revision: str = DEFAULT_REVISION

    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        return KlaviyoClient(resolve_secret(integration.secret_ref), revision=self.revision)


class SandboxCdp(CdpResource):
    sandbox_path: str
    latency_seconds: float = 0.0
    failure_rate: float = 0.0

    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        behaviour = SandboxBehaviour(
            latency_seconds=self.latency_seconds, failure_rate=self.failure_rate
        )
        transport = KlaviyoSandbox(shared_store(self.sandbox_path), behaviour)
        return KlaviyoClient(SANDBOX_API_KEY, transport=transport)
