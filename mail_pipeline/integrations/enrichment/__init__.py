"""Address enrichment: append postal addresses to people we know only by email and name.

:mod:`.base` is the provider-neutral interface; :mod:`.faraday` the Faraday client and
:mod:`.sandbox` its stand-in.
"""

from mail_pipeline.integrations.enrichment.base import (
    AddressEnricher,
    AppendedAddress,
    BatchPoll,
    BatchState,
    IdentityRow,
)

__all__ = ["AddressEnricher", "AppendedAddress", "BatchPoll", "BatchState", "IdentityRow"]
