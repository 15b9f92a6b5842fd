"""Order sources as a resource: an order client per organization integration.

``LiveOrderSources`` resolves the integration's ``secret_ref`` when a sync needs it, inside
that organization's own namespace (the organization id comes from the integration row, never
from the reference): AWS Secrets Manager in production, ``MAIL_PIPELINE_ORG_<id>_<REF>``
variables when bound locally - exactly as the CDP does. ``SandboxOrderSources`` talks to the
sandbox order sources with their own credentials. Both build the same clients
(``integrations.orders.factory.order_client``); building the resource touches nothing.
"""

from __future__ import annotations

from abc import abstractmethod

import dagster as dg
from pydantic import PrivateAttr

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.integrations.klaviyo.client import DEFAULT_REVISION
from mail_pipeline.integrations.orders.base import OrderClient
from mail_pipeline.integrations.orders.factory import order_client
from mail_pipeline.integrations.orders.sandbox import sandbox_order_client
from mail_pipeline.integrations.orders.shopify import DEFAULT_API_VERSION
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.integrations.secrets import OrganizationSecrets
from mail_pipeline.resources.sandbox import shared_store
from mail_pipeline.resources.secrets import SecretsSource, organization_secrets


class OrderSourcesResource(dg.ConfigurableResource):
    """Builds the order client of an organization's Klaviyo, Ometria or Shopify integration."""

    @abstractmethod
    def client_for(self, integration: IntegrationRef) -> OrderClient:
        """A client holding ``integration``'s organization's credential (the caller closes
        it); a kind that is no order source is a :class:`ValueError`."""


class LiveOrderSources(OrderSourcesResource):
    secrets: SecretsSource = "secrets-manager"
    #: The deployment's name in the Secrets Manager paths.
    deployment: str = "production"
    region_name: str | None = None
    klaviyo_revision: str = DEFAULT_REVISION
    #: A shop's own ``api_version`` setting wins over this.
    shopify_api_version: str = DEFAULT_API_VERSION
    _secrets: OrganizationSecrets | None = PrivateAttr(default=None)

    def organization_secrets(self) -> OrganizationSecrets:
        if self._secrets is None:
            self._secrets = organization_secrets(self.secrets, self.deployment, self.region_name)
        return self._secrets

    def client_for(self, integration: IntegrationRef) -> OrderClient:
        credential = self.organization_secrets().resolve(
            integration.organization_id, integration.secret_ref
        )
        return order_client(
            integration.kind,
            credential,
            integration.settings,
            klaviyo_revision=self.klaviyo_revision,
            shopify_api_version=self.shopify_api_version,
        )


class SandboxOrderSources(OrderSourcesResource):
    """The sandbox Klaviyo, Ometria and Shopify, over the shared sandbox file."""

    sandbox_path: str
    #: The sandbox server (``integrations.sandbox.server``) to talk to over the network, e.g.
    #: ``http://127.0.0.1:8700``; None: the sandbox runs in this process over ``sandbox_path``.
    #: With a server, latency and failures are the server's settings, not these.
    sandbox_url: str | None = None
    latency_seconds: float = 0.0
    failure_rate: float = 0.0

    def client_for(self, integration: IntegrationRef) -> OrderClient:
        behaviour = SandboxBehaviour(
            latency_seconds=self.latency_seconds, failure_rate=self.failure_rate
        )
        return sandbox_order_client(
            integration.kind,
            integration.organization_id,
            integration.settings,
            shared_store(self.sandbox_path),
            behaviour,
            server_url=self.sandbox_url,
        )
