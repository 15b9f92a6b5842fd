"""Usage billing (Stripe billing meter events) as a resource."""

from __future__ import annotations

from abc import abstractmethod

import dagster as dg
from pydantic import PrivateAttr

from mail_pipeline.integrations.billing.sandbox import SANDBOX_API_KEY, StripeSandbox
from mail_pipeline.integrations.billing.stripe_meter import StripeMeter
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.resources.sandbox import shared_store


class BillingResource(dg.ConfigurableResource):
    #: The Stripe meter's event name: one unit per postcard mailed.
    event_name: str = "postcards_mailed"
    _meter: StripeMeter | None = PrivateAttr(default=None)

    @abstractmethod
    def build(self) -> StripeMeter: ...

    def meter(self) -> StripeMeter:
        if self._meter is None:
            self._meter = self.build()
        return self._meter


class StripeBilling(BillingResource):
    api_key: str
    #: Staging on a sandbox server only: Stripe's API and meter-events hosts both at this
    #: base (e.g. ``http://127.0.0.1:8700/stripe``); None: Stripe's own hosts.
    api_base: str | None = None

    def build(self) -> StripeMeter:
        if self.api_base:
            base = self.api_base.rstrip("/")
            return StripeMeter(
                self.api_key, event_name=self.event_name, api_base=base, meter_events_base=base
            )
        return StripeMeter(self.api_key, event_name=self.event_name)


class SandboxBilling(BillingResource):
    sandbox_path: str
    #: The sandbox server (``integrations.sandbox.server``) to talk to over the network, e.g.
    #: ``http://127.0.0.1:8700``; None: the sandbox runs in this process over ``sandbox_path``.
    #: With a server, latency and failures are the server's settings, not these.
    sandbox_url: str | None = None
    latency_seconds: float = 0.0
    failure_rate: float = 0.0

    def build(self) -> StripeMeter:
        if self.sandbox_url:
            # The SDK's own HTTPXClient, as in production; only the base addresses move. The
            # server's Stripe answers both the API host and the meter-events host (v2 stream).
            base = f"{self.sandbox_url.rstrip('/')}/stripe"
            return StripeMeter(
                SANDBOX_API_KEY,
                event_name=self.event_name,
                api_base=base,
                meter_events_base=base,
            )
        sandbox = StripeSandbox(
            shared_store(self.sandbox_path),
            SandboxBehaviour(latency_seconds=self.latency_seconds, failure_rate=self.failure_rate),
        )
        return StripeMeter(SANDBOX_API_KEY, event_name=self.event_name, transport=sandbox)
