"""Which printer mails a postcard: a routing table by country, an organization's preference.

The tables are data, taken from the seed ("LOB or IntelliPrint for US, Stannp for UK"):

- ``DEFAULT_ROUTES``: the printer each country gets by default (US -> Lob, GB -> Stannp);
- ``PRINTER_COUNTRIES``: the countries each printer may serve. An organization that prefers a
  printer gets it wherever that printer serves the country; elsewhere the default applies.

Doubt, kept visible rather than silently "fixed": the vendor reference describes IntelliPrint
as a UK (Royal Mail) service whose postage options are UK classes plus ``international``, so
its listing as a *US* alternative in the seed looks reversed. The seed is the business's word,
so the table follows it; if the business confirms the reference, change
``PRINTER_COUNTRIES["intelliprint"]`` to ``{"GB"}`` and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from mail_pipeline.domain.addresses import normalize_country
from mail_pipeline.integrations.printers.base import Printer

log = logging.getLogger(__name__)

DEFAULT_ROUTES: Mapping[str, str] = {"US": "lob", "GB": "stannp"}

PRINTER_COUNTRIES: Mapping[str, frozenset[str]] = {
    "lob": frozenset({"US"}),
    "intelliprint": frozenset({"US"}),
    "stannp": frozenset({"GB"}),
}


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
        preferred = (organization_preference or "").strip().lower() or None
        if preferred is not None:
            if iso in self.serves.get(preferred, frozenset()) and preferred in self.printers:
                return self.printers[preferred]
            log.info(
                "preferred printer %s does not serve %s here; using the default", preferred, iso
            )
        name = self.routes.get(iso)
        if name is None:
            raise NoPrinterForCountry(f"no printer mails to {iso or 'an unknown country'}")
        printer = self.printers.get(name)
        if printer is None:
            raise NoPrinterForCountry(
                f"no printer mails to {iso}: its printer {name} is not configured"
            )
        return printer
