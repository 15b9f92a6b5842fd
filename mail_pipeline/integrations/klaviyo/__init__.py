"""Klaviyo as the CDP: segment members in, "postcard sent/delivered" events out.

Import the client and its values from here; the sandbox lives in
:mod:`~mail_pipeline.integrations.klaviyo.sandbox` (seeding in ``sandbox_data``).
"""

from mail_pipeline.integrations.klaviyo.client import KlaviyoClient, MalformedResponse
from mail_pipeline.integrations.klaviyo.models import (
    CdpEvent,
    CdpProfile,
    MalformedProfile,
    ProfilePage,
)

__all__ = [
    "CdpEvent",
    "CdpProfile",
    "KlaviyoClient",
    "MalformedProfile",
    "MalformedResponse",
    "ProfilePage",
]
