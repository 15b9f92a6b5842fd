"""Order sources: Klaviyo "Placed Order" events, Ometria orders, Shopify Admin GraphQL."""
