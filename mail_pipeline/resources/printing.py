"""Printers as a resource: the configured printers and the routing strategy over them.

"Never print a real postcard from a laptop" is a binding: locally ``SandboxPrinters`` is bound,
in production ``LivePrinters`` with keys from the environment. Which printer mails a
recipient follows the recipient's country and the organization's ``printer_preference``, by
the one routing table of ``domain.routing`` - the same rule the sync judges addresses by, so
there is deliberately no per-deployment override.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Literal

import dagster as dg
from pydantic import PrivateAttr

from mail_pipeline.integrations.printers.base import Printer
from mail_pipeline.integrations.printers.common import DEFAULT_LIMIT_FRACTION
from mail_pipeline.integrations.printers.intelliprint import IntelliPrintPrinter
from mail_pipeline.integrations.printers.lob import LobPrinter
from mail_pipeline.integrations.printers.sandbox import (
    emit_due_webhooks,
    sandbox_printers,
    sandbox_printers_at,
)
from mail_pipeline.integrations.printers.sandbox.base import SandboxTimeline
from mail_pipeline.integrations.printers.stannp import StannpPrinter
from mail_pipeline.integrations.printers.strategy import DEFAULT_ROUTES, PrinterStrategy
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.limits import MAILING_RUNS_IN_FLIGHT
from mail_pipeline.resources.sandbox import shared_store


class PrintersResource(dg.ConfigurableResource):
    #: Pieces are created in the printers' test modes (validated, never printed or charged).
    test_mode: bool = False
    #: Mailing runs that may use one API key at once (``limits.MAILING_RUNS_IN_FLIGHT``, the
    #: mailing sensor's and the run queue's limit). Each run's client keeps to its share of
    #: 95% of the vendor's rate limit, so together they never draw a 429.
    runs_sharing_key: int = MAILING_RUNS_IN_FLIGHT

    @property
    def limit_fraction(self) -> float:
        return DEFAULT_LIMIT_FRACTION / max(1, self.runs_sharing_key)

    _printers: dict[str, Printer] | None = PrivateAttr(default=None)

    @abstractmethod
    def build_printers(self) -> dict[str, Printer]: ...

    def printers(self) -> dict[str, Printer]:
        if self._printers is None:
            self._printers = self.build_printers()
        return self._printers

    def strategy(self) -> PrinterStrategy:
        return PrinterStrategy(DEFAULT_ROUTES, self.printers())


class LivePrinters(PrintersResource):
    """The vendors' APIs; a printer without a key is simply not available for routing.

    A printer with a key needs its webhook secret: the clients skip signature checks when
    they have none, so building one without it is refused here (and the production
    definitions refuse to load, see ``settings.production_problems``). An unsigned, forged
    "delivered" webhook can then never mark a recipient Received.
    """

    lob_api_key: str | None = None
    lob_webhook_secret: str | None = None
    stannp_api_key: str | None = None
    stannp_platform: Literal["uk", "us"] = "uk"
    stannp_webhook_secret: str | None = None
    intelliprint_api_key: str | None = None
    intelliprint_webhook_secret: str | None = None

    def build_printers(self) -> dict[str, Printer]:
        unsigned = [
            name
            for name, key, secret in (
                ("lob", self.lob_api_key, self.lob_webhook_secret),
                ("stannp", self.stannp_api_key, self.stannp_webhook_secret),
                ("intelliprint", self.intelliprint_api_key, self.intelliprint_webhook_secret),
            )
            if key and not secret
        ]
        if unsigned:
            raise ValueError(
                f"printers with an API key but no webhook secret: {', '.join(unsigned)}; "
                "their status webhooks could not be verified"
            )
        printers: dict[str, Printer] = {}
        if self.lob_api_key:
            printers["lob"] = LobPrinter(
                self.lob_api_key,
                webhook_secret=self.lob_webhook_secret,
                limit_fraction=self.limit_fraction,
            )
        if self.stannp_api_key:
            printers["stannp"] = StannpPrinter(
                self.stannp_api_key,
                platform=self.stannp_platform,
                webhook_secret=self.stannp_webhook_secret,
                limit_fraction=self.limit_fraction,
            )
        if self.intelliprint_api_key:
            printers["intelliprint"] = IntelliPrintPrinter(
                self.intelliprint_api_key,
                webhook_secret=self.intelliprint_webhook_secret,
                limit_fraction=self.limit_fraction,
            )
        return printers


class SandboxPrinters(PrintersResource):
    """Lob, Stannp and IntelliPrint sandboxes: each key accepted once, status webhooks
    emitted later on the timeline below (seconds after the piece was accepted).

    With ``sandbox_url`` the printers are the sandbox server's (the timeline is its too);
    ``sandbox_path`` must then name the server's store, from which the webhooks are emitted.
    """

    sandbox_path: str
    #: The sandbox server (``integrations.sandbox.server``) to talk to over the network, e.g.
    #: ``http://127.0.0.1:8700``; None: the sandbox runs in this process over ``sandbox_path``.
    #: With a server, latency and failures are the server's settings, not these.
    sandbox_url: str | None = None
    test_mode: bool = True
    latency_seconds: float = 0.0
    failure_rate: float = 0.0
    lost_response_rate: float = 0.0
    in_transit_after: float = 20.0
    delivered_after: float = 45.0
    returned_rate: float = 0.02
    client_rate_limits: bool = True

    def build_printers(self) -> dict[str, Printer]:
        if self.sandbox_url:
            return sandbox_printers_at(
                self.sandbox_url,
                client_rate_limits=self.client_rate_limits,
                limit_fraction=self.limit_fraction,
            )
        return sandbox_printers(
            shared_store(self.sandbox_path),
            SandboxBehaviour(
                latency_seconds=self.latency_seconds,
                failure_rate=self.failure_rate,
                lost_response_rate=self.lost_response_rate,
            ),
            self.timeline(),
            client_rate_limits=self.client_rate_limits,
            limit_fraction=self.limit_fraction,
        )

    def timeline(self) -> SandboxTimeline:
        step = self.in_transit_after / 3
        return SandboxTimeline(
            in_production_after=step,
            mailed_after=2 * step,
            in_transit_after=self.in_transit_after,
            in_local_area_after=(self.in_transit_after + self.delivered_after) / 2,
            delivered_after=self.delivered_after,
            returned_rate=self.returned_rate,
        )

    def emit_webhooks(self, send: Any, now: float | None = None) -> int:
        """Deliver the status webhooks that are due onto the status queue (``send``)."""
        return emit_due_webhooks(shared_store(self.sandbox_path), send, now)
