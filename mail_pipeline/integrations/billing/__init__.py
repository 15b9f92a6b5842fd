"""Usage billing: a Stripe meter event per mailed postcard (official ``stripe`` SDK).

The sandbox lives in :mod:`~mail_pipeline.integrations.billing.sandbox`.
"""

from mail_pipeline.integrations.billing.stripe_meter import (
    MeterEventResult,
    StripeMeter,
    TransportHTTPClient,
    map_stripe_error,
)

__all__ = ["MeterEventResult", "StripeMeter", "TransportHTTPClient", "map_stripe_error"]
