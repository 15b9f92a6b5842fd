"""Which printer mails a postcard: the domain's routing rule over the configured printers.

The tables and the rule live in :mod:`mail_pipeline.domain.routing` (the sync judges routes
with them too, so a recipient no printer can take is an Error before its proof is made);
this class applies them to the printers a deployment has configured: a preferred printer
that is not configured is passed over, and a route to an unconfigured printer says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from mail_pipeline.domain.addresses import normalize_country
from mail_pipeline.domain.routing import (
    DEFAULT_ROUTES,
    PRINTER_COUNTRIES,
    NoRoute,
    choose_printer,
    normalize_preference,
)
from mail_pipeline.integrations.printers.base import Printer

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ROUTES",
    "PRINTER_COUNTRIES",
    "NoPrinterForCountry",
    "PrinterStrategy",
    "RoutingError",
]


class RoutingError(ValueError):
    """No printer can take this postcard; ``str()`` says why, for the recipient's Error."""


class NoPrinterForCountry(RoutingError):
    pass


class PrinterStrategy:
    """Chooses the printer for a recipient's country and the organization's preference."""

    def __init__(
        self,
        routes: Mapping[str, str],
        printers: Mapping[str, Printer],
        serves: Mapping[str, frozenset[str]] = PRINTER_COUNTRIES,
    ) -> None:
        self.routes = {country.upper(): name for country, name in routes.items()}
        self.printers = dict(printers)
        self.serves = dict(serves)

    @classmethod
    def default(cls, printers: Mapping[str, Printer]) -> PrinterStrategy:
        return cls(DEFAULT_ROUTES, printers)

    def choose(self, country: str, organization_preference: str | None = None) -> Printer:
        """The printer for ``country`` (ISO code or name); raises :class:`NoPrinterForCountry`."""
        iso = normalize_country(country) or (country or "").strip().upper()
        try:
            name = choose_printer(
                iso,
                organization_preference,
                routes=self.routes,
                serves=self.serves,
                available=self.printers,
            )
        except NoRoute as exc:
            raise NoPrinterForCountry(str(exc)) from None
        preferred = normalize_preference(organization_preference)
        if preferred is not None and name != preferred:
            log.info(
                "preferred printer %s does not serve %s here; using the default", preferred, iso
            )
        printer = self.printers.get(name)
        if printer is None:
            raise NoPrinterForCountry(
                f"no printer mails to {iso}: its printer {name} is not configured"
            )
        return printer
