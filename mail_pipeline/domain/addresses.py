"""Postal addresses: the value object printers receive, and the normal form used to match.

CDPs send free text (Klaviyo's ``location.country`` is "United States" as often as "US"), so
every address is normalized once when it enters the system: country to ISO-3166 alpha-2,
whitespace collapsed, US ZIP to 5 digits for matching, UK postcodes upper-cased with one space.
:func:`address_key` is the normal form used for dedupe, blocklists and order attribution.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_COUNTRY_ALIASES = {
    "us": "US",
    "usa": "US",
    "u.s.": "US",
    "u.s.a.": "US",
    "united states": "US",
    "united states of america": "US",
    "america": "US",
    "gb": "GB",
    "uk": "GB",
    "u.k.": "GB",
    "united kingdom": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "ca": "CA",
    "canada": "CA",
    "ie": "IE",
    "ireland": "IE",
    "au": "AU",
    "australia": "AU",
    "de": "DE",
    "germany": "DE",
    "fr": "FR",
    "france": "FR",
}

_WS = re.compile(r"\s+")
_NON_ALNUM = re.compile(r"[^a-z0-9 ]")
_STREET_WORDS = {
    "street": "st",
    "avenue": "ave",
    "road": "rd",
    "boulevard": "blvd",
    "drive": "dr",
    "lane": "ln",
    "court": "ct",
    "place": "pl",
    "apartment": "apt",
    "suite": "ste",
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
}


def normalize_country(value: str | None) -> str | None:
    """ISO alpha-2 for a country name or code; ``None`` when it cannot be told."""
    if not value:
        return None
    text = _WS.sub(" ", value.strip()).lower()
    if text in _COUNTRY_ALIASES:
        return _COUNTRY_ALIASES[text]
    if len(text) == 2 and text.isalpha():
        return text.upper()
    return None


def normalize_postal_code(value: str | None, country: str | None) -> str | None:
    if not value:
        return None
    text = _WS.sub(" ", value.strip()).upper()
    if country == "GB":
        compact = text.replace(" ", "")
        return f"{compact[:-3]} {compact[-3:]}" if len(compact) > 3 else compact
    return text


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    text = _WS.sub(" ", value.strip())
    return text or None


@dataclass(frozen=True)
class Address:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str | None = None
    region: str | None = None

    @classmethod
    def build(
        cls,
        *,
        name: str | None,
        line1: str | None,
        city: str | None,
        postal_code: str | None,
        country: str | None,
        line2: str | None = None,
        region: str | None = None,
    ) -> Address:
        """A normalized address, or :class:`InvalidAddress` saying what is missing."""
        iso = normalize_country(country)
        fields = {
            "name": _clean(name),
            "line1": _clean(line1),
            "city": _clean(city),
            "postal_code": normalize_postal_code(postal_code, iso),
            "country": iso,
        }
        missing = [k for k, v in fields.items() if not v]
        if missing:
            if "country" in missing and country:
                raise InvalidAddress(f"unknown country {country!r}")
            raise InvalidAddress("address is missing " + ", ".join(missing))
        region_clean = _clean(region)
        if iso == "US":
            if not region_clean:
                raise InvalidAddress("US address is missing the state")
            region_clean = region_clean.upper()
        return cls(
            name=fields["name"] or "",
            line1=fields["line1"] or "",
            city=fields["city"] or "",
            postal_code=fields["postal_code"] or "",
            country=iso or "",
            line2=_clean(line2),
            region=region_clean,
        )


class InvalidAddress(ValueError):
    """An address a printer would refuse; the message says why."""


def has_address(line1: str | None, city: str | None, postal_code: str | None) -> bool:
    """Whether a profile carries enough of an address to try mailing it."""
    return bool(_clean(line1) and _clean(city) and _clean(postal_code))


def _street_key(value: str) -> str:
    words = _NON_ALNUM.sub(" ", value.lower()).split()
    return " ".join(_STREET_WORDS.get(w, w) for w in words)


def address_key(
    line1: str | None, postal_code: str | None, country: str | None, line2: str | None = None
) -> str | None:
    """The matching form of an address: street words abbreviated, ZIP5, country code.

    Two spellings of one address ("12 North Main Street, 10017-1234" and "12 N Main St,
    10017") give the same key. ``None`` without a street and postal code.
    """
    iso = normalize_country(country) or (country or "").upper()
    if not line1 or not postal_code:
        return None
    postal = postal_code.strip().upper().replace(" ", "")
    if iso == "US":
        postal = postal[:5]
    street = _street_key(line1 + (" " + line2 if line2 else ""))
    return f"{iso}|{postal}|{street}"


def email_key(email: str | None) -> str | None:
    """Lower-cased, trimmed email; ``None`` for empty or obviously invalid values."""
    if not email:
        return None
    text = email.strip().lower()
    if "@" not in text or text.startswith("@") or text.endswith("@"):
        return None
    return text
