"""One order client for an integration, whichever its kind: what the live and the sandbox
resources both build, so the sandboxes run the production clients unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.integrations.klaviyo.client import DEFAULT_REVISION, KlaviyoClient
from mail_pipeline.integrations.orders.base import OrderClient
from mail_pipeline.integrations.orders.klaviyo import KlaviyoOrderClient
from mail_pipeline.integrations.orders.ometria import OmetriaOrderClient
from mail_pipeline.integrations.orders.shopify import DEFAULT_API_VERSION, ShopifyOrderClient

ORDER_SOURCES = (IntegrationKind.KLAVIYO, IntegrationKind.OMETRIA, IntegrationKind.SHOPIFY)


def order_client(
    kind: IntegrationKind,
    credential: str,
    settings: Mapping[str, Any],
    *,
    transport: httpx.BaseTransport | None = None,
    base_url: str | None = None,
    klaviyo_revision: str = DEFAULT_REVISION,
    shopify_api_version: str = DEFAULT_API_VERSION,
) -> OrderClient:
    """The client of an order source ``kind`` with the organization's ``credential`` (its
    Klaviyo private key, Ometria API key or Shopify access token) and the integration's
    non-secret ``settings``. A shop's own ``api_version`` setting wins over the default.
    ``base_url`` replaces the vendor's address (the sandbox server's, for that account)."""
    at: dict[str, Any] = {} if base_url is None else {"base_url": base_url}
    if kind is IntegrationKind.KLAVIYO:
        client = KlaviyoClient(credential, revision=klaviyo_revision, transport=transport, **at)
        return KlaviyoOrderClient.from_settings(client, settings)
    if kind is IntegrationKind.OMETRIA:
        return OmetriaOrderClient(credential, transport=transport, **at)
    if kind is IntegrationKind.SHOPIFY:
        return ShopifyOrderClient.from_settings(
            credential, settings, transport=transport, api_version=shopify_api_version, **at
        )
    raise ValueError(f"{kind} is not an order source")
