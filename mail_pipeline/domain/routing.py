"""Which printer mails a postcard to a country, and the limits a printer would refuse.

The tables are data, taken from the seed ("LOB or IntelliPrint for US, Stannp for UK"):

- :data:`DEFAULT_ROUTES`: the printer each country gets by default (US -> Lob, GB -> Stannp);
- :data:`PRINTER_COUNTRIES`: the countries each printer may serve. An organization that
  prefers a printer gets it wherever that printer serves the country (and is available);
  elsewhere the country's default applies. A country without a default route is not mailed.

Doubt, kept visible rather than silently "fixed": the vendor reference describes IntelliPrint
as a UK (Royal Mail) service, so its listing as a *US* alternative in the seed looks reversed.
The seed is the business's word, so the table follows it; if the business confirms the
reference, change ``PRINTER_COUNTRIES["intelliprint"]`` to ``{"GB"}`` and nothing else.

:data:`ADDRESS_LINES_MAX` holds the printers' documented limits that would certainly refuse a
postcard: Lob answers ``ADDRESS_LENGTH_EXCEEDS_LIMIT`` when ``address_line1`` and
``address_line2`` together are longer than 50 characters. The sync judges it when it knows the
route, so such a recipient is an Error before its proof is paid for.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

DEFAULT_ROUTES: Mapping[str, str] = {"US": "lob", "GB": "stannp"}

PRINTER_COUNTRIES: Mapping[str, frozenset[str]] = {
    "lob": frozenset({"US"}),
    "intelliprint": frozenset({"US"}),
    "stannp": frozenset({"GB"}),
}

#: printer -> the most characters address line 1 and line 2 may have together.
ADDRESS_LINES_MAX: Mapping[str, int] = {"lob": 50}

_PRINTER_NAMES = {"lob": "Lob", "stannp": "Stannp", "intelliprint": "IntelliPrint"}


class NoRoute(ValueError):
    """No printer mails to this country; ``str()`` says so, for the recipient's Error."""


def normalize_preference(preference: str | None) -> str | None:
    """An organization's ``printer_preference`` as a printer name (``None`` when unset)."""
    return (preference or "").strip().lower() or None


def choose_printer(
    country: str | None,
    preference: str | None = None,
    *,
    routes: Mapping[str, str] = DEFAULT_ROUTES,
    serves: Mapping[str, Collection[str]] = PRINTER_COUNTRIES,
    available: Collection[str] | None = None,
) -> str:
    """The printer for ``country`` (ISO alpha-2): the organization's preferred printer where
    it serves the country and is ``available`` (``None``: every printer is), else the
    country's route. Raises :class:`NoRoute`."""
    iso = (country or "").strip().upper()
    preferred = normalize_preference(preference)
    if (
        preferred is not None
        and iso in serves.get(preferred, ())
        and (available is None or preferred in available)
    ):
        return preferred
    routed = {code.upper(): name for code, name in routes.items()}.get(iso)
    if routed is None:
        raise NoRoute(f"no printer mails to {iso or 'an unknown country'}")
    return routed


def printer_problem(printer: str, line1: str | None, line2: str | None) -> str | None:
    """Why ``printer`` would certainly refuse this address, or ``None``."""
    limit = ADDRESS_LINES_MAX.get(printer)
    length = len(line1 or "") + len(line2 or "")
    if limit is not None and length > limit:
        name = _PRINTER_NAMES.get(printer, printer)
        return (
            f"address lines 1 and 2 are {length} characters together; {name} takes at most {limit}"
        )
    return None
