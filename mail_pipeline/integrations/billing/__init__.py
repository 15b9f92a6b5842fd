"""Usage billing: a Stripe meter event per mailed postcard (official ``stripe`` SDK), one per
call (v1) or up to 100 per call on the v2 meter event stream.

The sandbox lives in :mod:`~mail_pipeline.integrations.billing.sandbox`.
"""

from mail_pipeline.integrations.billing.stripe_errors import map_stripe_error
from mail_pipeline.integrations.billing.stripe_meter import (
    MeterEventResult,
    StripeMeter,
    TransportHTTPClient,
)
from mail_pipeline.integrations.billing.usage import InvalidUsageEvents, UsageEvent

__all__ = [
    "InvalidUsageEvents",
    "MeterEventResult",
    "StripeMeter",
    "TransportHTTPClient",
    "UsageEvent",
    "map_stripe_error",
]
