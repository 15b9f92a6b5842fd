"""Printers as a resource: the configured printers and the routing strategy over them.

"Never print a real postcard from a laptop" is a binding: locally ``SandboxPrinters`` is bound,
in production ``LivePrinters`` with keys from the environment. Which printer mails a
recipient follows the recipient's country and the organization's ``printer_preference``, by
the one routing table of ``domain.routing`` - the same rule the sync judges addresses by, so
there is deliberately no per-deployment override.

Rate limits: every process mailing with one printer API key takes its calls from one schedule
in the app database (``db.ratelimit.SharedRateLimiter``, bound with ``database``), so all the
mailing runs in flight together use 95 % of the printer's limit - and one run alone uses
those 95 % too - without ever drawing a 429. The limit is the vendor's published one unless
``MAIL_PIPELINE_RATE_LIMITS`` (``settings.parse_rate_limits``) sets a contract limit or
``off``. See ``docs/rate_limits.md``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Literal

import dagster as dg
from pydantic import PrivateAttr

from mail_pipeline.db.ratelimit import SharedRateLimiter, limit_key
from mail_pipeline.integrations.printers.base import Printer
from mail_pipeline.integrations.printers.common import DEFAULT_LIMIT_FRACTION
from mail_pipeline.integrations.printers.intelliprint import (
    INTELLIPRINT_BASE_URL,
    INTELLIPRINT_RATE_LIMIT,
    IntelliPrintPrinter,
)
from mail_pipeline.integrations.printers.lob import LOB_BASE_URL, LOB_RATE_LIMIT, LobPrinter
from mail_pipeline.integrations.printers.sandbox import (
    emit_due_webhooks,
    sandbox_printers,
    sandbox_printers_at,
)
from mail_pipeline.integrations.printers.sandbox.base import SandboxTimeline
from mail_pipeline.integrations.printers.stannp import (
    STANNP_BASE_URLS,
    STANNP_RATE_LIMIT,
    StannpPrinter,
)
from mail_pipeline.integrations.printers.strategy import DEFAULT_ROUTES, PrinterStrategy
from mail_pipeline.integrations.ratelimit import Limiter, SlidingWindowLimiter
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.limits import MAILING_RUNS_IN_FLIGHT
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.sandbox import shared_store
from mail_pipeline.settings import RateLimit, parse_rate_limits, rate_limit_overrides

#: The printers' published limits: requests per window (seconds), per API key.
PUBLISHED_RATE_LIMITS: dict[str, tuple[int, float]] = {
    "lob": LOB_RATE_LIMIT,
    "stannp": STANNP_RATE_LIMIT,
    "intelliprint": INTELLIPRINT_RATE_LIMIT,
}


class PrintersResource(dg.ConfigurableResource):
    #: Pieces are created in the printers' test modes (validated, never printed or charged).
    test_mode: bool = False
    #: The app database (its URL) that holds the printers' shared rate limits: every process
    #: that mails with one API key keeps, together with the others, to 95 % of its limit.
    #: None (a resource built by hand, in tests): no process shares, so each keeps to a
    #: fixed share, 95 % / ``MAILING_RUNS_IN_FLIGHT``, as if that many runs were in flight.
    #: (A URL, not a nested ``Database`` resource: a nested resource makes every sensor
    #: context that binds the printers a context manager.)
    database_url: str | None = None
    #: The environment the database must serve (``Database.environment``).
    database_environment: str | None = None
    #: Contract rate limits, as ``MAIL_PIPELINE_RATE_LIMITS`` spells them
    #: (``lob=300/5,stannp=off``); None: that variable of this process. A printer not named
    #: keeps its published limit (``PUBLISHED_RATE_LIMITS``).
    rate_limits: str | None = None

    _printers: dict[str, Printer] | None = PrivateAttr(default=None)

    def rate_limit(self, printer: str) -> tuple[int, float] | None:
        """The limit ``printer``'s client keeps to (None: no client-side limit)."""
        overrides: dict[str, RateLimit | None] = (
            rate_limit_overrides()
            if self.rate_limits is None
            else parse_rate_limits(self.rate_limits)
        )
        if printer in overrides:
            return overrides[printer]
        return PUBLISHED_RATE_LIMITS[printer]

    def limiter(self, printer: str, api_key: str) -> Limiter | None:
        """The limiter of ``printer``'s calls with ``api_key``: shared on the database at
        95 % of its limit, else this process's fixed share; None when its limit is off."""
        limit = self.rate_limit(printer)
        if limit is None:
            return None
        calls, seconds = limit
        if self.database_url is None:
            share = DEFAULT_LIMIT_FRACTION / MAILING_RUNS_IN_FLIGHT
            return SlidingWindowLimiter(calls, seconds, fraction=share)
        return SharedRateLimiter(
            Database(url=self.database_url, environment=self.database_environment).session,
            limit_key(printer, api_key),
            calls,
            seconds,
            fraction=DEFAULT_LIMIT_FRACTION,
        )

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
    #: Staging on a sandbox server only: every printer's API under this URL (``/lob/v1``,
    #: ``/stannp/v1``, ``/intelliprint/v1``, as ``integrations.sandbox.server`` mounts them);
    #: None: the printers' own hosts.
    api_base_url: str | None = None

    def _base_url(self, printer: str, default: str) -> str:
        if not self.api_base_url:
            return default
        return f"{self.api_base_url.rstrip('/')}/{printer}/v1"

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
                rate_limit=None,
                limiter=self.limiter("lob", self.lob_api_key),
                base_url=self._base_url("lob", LOB_BASE_URL),
            )
        if self.stannp_api_key:
            printers["stannp"] = StannpPrinter(
                self.stannp_api_key,
                platform=self.stannp_platform,
                webhook_secret=self.stannp_webhook_secret,
                rate_limit=None,
                limiter=self.limiter("stannp", self.stannp_api_key),
                base_url=self._base_url("stannp", STANNP_BASE_URLS[self.stannp_platform]),
            )
        if self.intelliprint_api_key:
            printers["intelliprint"] = IntelliPrintPrinter(
                self.intelliprint_api_key,
                webhook_secret=self.intelliprint_webhook_secret,
                rate_limit=None,
                limiter=self.limiter("intelliprint", self.intelliprint_api_key),
                base_url=self._base_url("intelliprint", INTELLIPRINT_BASE_URL),
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
    #: False: the printers' clients keep to no rate limit at all (a sandbox without one).
    client_rate_limits: bool = True

    def build_printers(self) -> dict[str, Printer]:
        if self.sandbox_url:
            return sandbox_printers_at(
                self.sandbox_url,
                client_rate_limits=self.client_rate_limits,
                limiter_for=self.limiter,
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
            limiter_for=self.limiter,
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

    def emit_webhooks(self, send: Any, now: float | None = None, *, send_many: Any = None) -> int:
        """Deliver the status webhooks that are due onto the status queue (``send`` one at a
        time, or ``send_many`` a page at a time)."""
        return emit_due_webhooks(shared_store(self.sandbox_path), send, now, send_many=send_many)
