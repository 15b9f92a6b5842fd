"""Where the numbers come from: the order sources and the recipients table, as external
assets (``dg.AssetSpec``), so the asset graph starts with them. Nothing here is
materialized by this code location: the vendors hold the orders, and the recipients table
is written by the sync, proofing, mailing and status jobs."""

import dagster as dg

GROUP = "orders_and_attribution"

klaviyo_placed_orders = dg.AssetSpec(
    "klaviyo_placed_orders",
    group_name=GROUP,
    description='Klaviyo "Placed Order" events of each organization on Klaviyo (Events API).',
    kinds={"klaviyo"},
)
ometria_orders = dg.AssetSpec(
    "ometria_orders",
    group_name=GROUP,
    description="Orders of each organization on Ometria (REST API).",
    kinds={"ometria"},
)
shopify_orders = dg.AssetSpec(
    "shopify_orders",
    group_name=GROUP,
    description="Orders of each organization's Shopify store (Admin GraphQL API).",
    kinds={"shopify"},
)
recipients = dg.AssetSpec(
    "recipients",
    group_name=GROUP,
    description="The app's recipients table: who was mailed (Sent, Received, with sent_at), "
    "who was held out (Holdout), their matching keys and offer codes. Written by the sync, "
    "proofing, mailing and status jobs.",
    kinds={"postgres"},
)

ASSETS = [klaviyo_placed_orders, ometria_orders, shopify_orders, recipients]
