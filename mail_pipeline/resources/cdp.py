"""The CDP (Klaviyo) as a resource: a client per organization integration.

``KlaviyoCdp`` resolves the organization's ``secret_ref`` when a run needs it, inside that
organization's own namespace (``integrations.secrets``): from AWS Secrets Manager in
production, from ``MAIL_PIPELINE_ORG_<id>_<REF>`` variables when bound locally.
``SandboxCdp`` talks to the Klaviyo sandbox. Both read segments the same way.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import dagster as dg
from pydantic import PrivateAttr

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.integrations.klaviyo.client import DEFAULT_REVISION, KlaviyoClient
from mail_pipeline.integrations.klaviyo.models import ProfilePage
from mail_pipeline.integrations.klaviyo.sandbox import SANDBOX_API_KEY, KlaviyoSandbox
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.integrations.secrets import OrganizationSecrets
from mail_pipeline.resources.sandbox import shared_store
from mail_pipeline.resources.secrets import organization_secrets


class CdpResource(dg.ConfigurableResource):
    """Reads campaign segments and profiles' properties, and receives postcard events."""

    page_size: int = 100

    @abstractmethod
    def client_for(self, integration: IntegrationRef) -> KlaviyoClient: ...

    def segment_pages(self, integration: IntegrationRef, segment_id: str) -> Iterator[ProfilePage]:
        with self.client_for(integration) as client:
            yield from client.iter_segment_profiles(segment_id, self.page_size)

    def profile_properties(
        self, integration: IntegrationRef, profile_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The custom properties of these profiles, by id (absent: no such profile)."""
        with self.client_for(integration) as client:
            return client.profiles_properties(profile_ids, self.page_size)


class KlaviyoCdp(CdpResource):
    revision: str = DEFAULT_REVISION
    #: Where organizations' secrets are read: ``secrets-manager`` (production binds it) or
    #: ``environment`` (local and test only; never bound in production).
    secrets: Literal["secrets-manager", "environment"] = "secrets-manager"
    #: The deployment's name in the Secrets Manager paths.
    deployment: str = "production"
    region_name: str | None = None
    _secrets: OrganizationSecrets | None = PrivateAttr(default=None)

    def organization_secrets(self) -> OrganizationSecrets:
        if self._secrets is None:
            self._secrets = organization_secrets(self.secrets, self.deployment, self.region_name)
        return self._secrets

    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        """A client with the key of ``integration``'s own organization (the organization id
        comes from the integration row, never from its ``secret_ref``)."""
        key = self.organization_secrets().resolve(
            integration.organization_id, integration.secret_ref
        )
        return KlaviyoClient(key, revision=self.revision)


class SandboxCdp(CdpResource):
    sandbox_path: str
    #: The sandbox server (``integrations.sandbox.server``) to talk to over the network, e.g.
    #: ``http://127.0.0.1:8700``; None: the sandbox runs in this process over ``sandbox_path``.
    #: With a server, latency and failures are the server's settings, not these.
    sandbox_url: str | None = None
    latency_seconds: float = 0.0
    failure_rate: float = 0.0

    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        if self.sandbox_url:
            return KlaviyoClient(
                SANDBOX_API_KEY, base_url=f"{self.sandbox_url.rstrip('/')}/klaviyo"
            )
        behaviour = SandboxBehaviour(
            latency_seconds=self.latency_seconds, failure_rate=self.failure_rate
        )
        transport = KlaviyoSandbox(shared_store(self.sandbox_path), behaviour)
        return KlaviyoClient(SANDBOX_API_KEY, transport=transport)
