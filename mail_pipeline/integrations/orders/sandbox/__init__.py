"""The sandbox order sources: Klaviyo's events, Ometria's orders and Shopify's GraphQL
``orders``, each an ``httpx`` transport over the shared sandbox store.

- :func:`sandbox_order_client` gives the real client of an integration (the same
  ``factory.order_client`` production uses) wired to its sandbox, with the sandbox's
  credentials - whatever the integration's ``secret_ref`` names, as the sandbox CDP does.
- :func:`sandbox_account` says where an organization's orders live in a sandbox: Klaviyo and
  Ometria keep one account per organization (``organization-<id>``), Shopify one per shop
  (the integration's ``shop`` setting), as the real vendors do. The shopper
  (``services.sandbox_shoppers``) and the tests place orders there with
  :class:`OrderSandboxData`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.integrations.klaviyo.sandbox import SANDBOX_API_KEY as KLAVIYO_SANDBOX_KEY
from mail_pipeline.integrations.orders.base import OrderClient
from mail_pipeline.integrations.orders.factory import order_client
from mail_pipeline.integrations.orders.sandbox.data import OrderSandboxData, SandboxOrder
from mail_pipeline.integrations.orders.sandbox.klaviyo import KlaviyoOrdersSandbox
from mail_pipeline.integrations.orders.sandbox.ometria import (
    SANDBOX_API_KEY as OMETRIA_SANDBOX_KEY,
)
from mail_pipeline.integrations.orders.sandbox.ometria import OmetriaSandbox
from mail_pipeline.integrations.orders.sandbox.shopify import (
    SANDBOX_ACCESS_TOKEN,
    ShopifySandbox,
)
from mail_pipeline.integrations.orders.shopify import SHOP_SETTING, shop_name
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour

__all__ = [
    "KlaviyoOrdersSandbox",
    "OmetriaSandbox",
    "OrderSandboxData",
    "SandboxOrder",
    "ShopifySandbox",
    "sandbox_account",
    "sandbox_order_client",
    "sandbox_transport",
]


def sandbox_account(
    kind: IntegrationKind, organization_id: int, settings: Mapping[str, Any]
) -> str:
    """Where the organization's orders of ``kind`` live in the sandboxes; a Shopify
    integration without a valid ``shop`` setting raises :class:`ValueError`."""
    if kind is IntegrationKind.SHOPIFY:
        shop = settings.get(SHOP_SETTING)
        return shop_name(shop if isinstance(shop, str) else "")
    return f"organization-{organization_id}"


def sandbox_transport(
    kind: IntegrationKind,
    account: str,
    store: SandboxStore,
    behaviour: SandboxBehaviour | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> tuple[httpx.BaseTransport, str]:
    """The sandbox of ``kind`` serving ``account``, and the credential it accepts."""
    common: dict[str, Any] = {"sleep": sleep, "clock": clock}
    if kind is IntegrationKind.KLAVIYO:
        return KlaviyoOrdersSandbox(store, behaviour, account=account, **common), (
            KLAVIYO_SANDBOX_KEY
        )
    if kind is IntegrationKind.OMETRIA:
        return OmetriaSandbox(store, behaviour, account=account, **common), OMETRIA_SANDBOX_KEY
    if kind is IntegrationKind.SHOPIFY:
        return ShopifySandbox(store, behaviour, **common), SANDBOX_ACCESS_TOKEN
    raise ValueError(f"{kind} is not an order source")


def sandbox_order_client(
    kind: IntegrationKind,
    organization_id: int,
    settings: Mapping[str, Any],
    store: SandboxStore,
    behaviour: SandboxBehaviour | None = None,
    *,
    server_url: str | None = None,
) -> OrderClient:
    """The organization's real order client of ``kind``, talking to its sandbox: in this
    process over ``store``, or over the network to the sandbox server at ``server_url``
    (``integrations.sandbox.server``, which serves each account under its own path)."""
    try:
        account = sandbox_account(kind, organization_id, settings)
    except ValueError:
        account = ""  # the client refuses the setting itself, with the setting's name
    transport, credential = sandbox_transport(kind, account, store, behaviour)
    if server_url is not None:
        base_url = f"{server_url.rstrip('/')}/orders/{kind.value}/{account}"
        return order_client(kind, credential, settings, base_url=base_url)
    return order_client(kind, credential, settings, transport=transport)
