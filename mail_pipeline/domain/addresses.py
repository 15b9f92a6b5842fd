"""Postal addresses: the value object printers receive, the rules an address must meet to be
mailed, and the normal form used to match.

CDPs send free text (Klaviyo's ``location.country`` is "United States" as often as "US"), so
every address is judged and normalized once, when it enters the system (at sync), by the
rules printers and postal services apply - a postcard that would be refused at mailing is
refused here, before money is spent on its proof:

- the country comes from the ISO 3166 table (pycountry): alpha-2, alpha-3, the name, the
  official and the common name, compared without case, accents, dots, other punctuation,
  extra whitespace or a leading "The"; common spellings are added ("UK", "Great Britain",
  "England", "Scotland", "Wales", "Northern Ireland" -> GB; "America" -> US; ...). Anything
  else is an unknown country - two letters are not enough ("ZZ" is no country);
- US territories with their own ISO code (PR, GU, VI, AS, MP) are mailed as US addresses
  with that code as the state, as USPS does;
- a US address needs a state: the 50 states, DC, the territories PR GU VI AS MP and the
  military "states" AA AE AP, by code or full name ("California" -> CA). UM (the Minor
  Outlying Islands) has no postal delivery and is refused. It needs a ZIP code: 5 digits
  or ZIP+4, stored as ``12345`` or ``12345-6789`` ("10017 1234" and "100171234" become
  "10017-1234"); a 3- or 4-digit ZIP of a state whose ZIPs start with 0 (New England, NJ,
  PR, VI, AE) lost its leading zeros to a spreadsheet and gets them back;
- a GB address needs a postcode of the Royal Mail format, stored upper-case with one space
  before the inward code ("sw1a1aa" -> "SW1A 1AA");
- an address without a country takes the organization's home country when the caller gives
  one (and is then judged by that country's rules; the reason says the country was
  assumed); without either it is missing its country.

Whitespace runs are collapsed to one space. :func:`address_key` is the normal form used for
dedupe, blocklists and order attribution; it always fits its column.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache

import pycountry

from mail_pipeline.domain.fields import ADDRESS_KEY_MAX, EMAIL_KEY_MAX

_WS = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^\w]+")
_NON_ALNUM = re.compile(r"[^a-z0-9 ]")
_DASHES = re.compile(r"[\u2010-\u2015\u2212]")
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

#: Spellings people use that the ISO table does not list (compared in lookup form).
_COUNTRY_ALIASES = {
    "america": "US",
    "united states of america": "US",
    "uk": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "holland": "NL",
    "russia": "RU",
    "czech republic": "CZ",
    "ivory coast": "CI",
    "turkey": "TR",
    "vatican": "VA",
    "vatican city": "VA",
    "macau": "MO",
    "burma": "MM",
    "swaziland": "SZ",
    "cape verde": "CV",
    "east timor": "TL",
    "uae": "AE",
    "south korea": "KR",
    "north korea": "KP",
}

#: ISO countries that USPS serves as US addresses, the code becoming the state.
US_TERRITORIES = frozenset({"PR", "GU", "VI", "AS", "MP", "UM"})
#: The 50 states and DC.
_STATE_CODES = (
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO "
    "MT NE NV NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC"
)
US_STATES = frozenset(_STATE_CODES.split())
US_MILITARY_STATES = frozenset({"AA", "AE", "AP"})
#: Mailable US "states": states, DC, territories (not UM), military.
US_MAILABLE_STATES = US_STATES | (US_TERRITORIES - {"UM"}) | US_MILITARY_STATES
_US_STATE_ALIASES = {
    "washington dc": "DC",
    "washington district of columbia": "DC",
    "virgin islands": "VI",
    "armed forces americas": "AA",
    "armed forces europe": "AE",
    "armed forces africa": "AE",
    "armed forces canada": "AE",
    "armed forces middle east": "AE",
    "armed forces pacific": "AP",
}
#: States whose ZIP codes start with 0: a 3- or 4-digit ZIP there lost its leading zeros.
_ZERO_ZIP_STATES = frozenset({"CT", "MA", "ME", "NH", "NJ", "RI", "VT", "PR", "VI", "AE"})
_US_ZIP = re.compile(r"^([0-9]{5})(?:-?([0-9]{4}))?$")
#: Royal Mail postcode format (outward code, inward code), compared without spaces.
_GB_POSTCODE = re.compile(
    r"^(?:GIR0AA|(?:[A-PR-UWYZ][0-9]{1,2}|[A-PR-UWYZ][A-HK-Y][0-9]{1,2}"
    r"|[A-PR-UWYZ][0-9][A-HJKPS-UW]|[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRV-Y])"
    r"[0-9][ABD-HJLNP-UW-Z]{2})$"
)


def clean(value: str | None) -> str | None:
    """Trimmed text with whitespace runs collapsed to one space; ``None`` when empty."""
    if value is None:
        return None
    text = _WS.sub(" ", value.strip())
    return text or None


@lru_cache(maxsize=4096)
def _lookup_form(text: str) -> str:
    """How names are compared: no accents or case, dots and apostrophes dropped, other
    punctuation as spaces, no leading "the"; spaced single letters joined ("U S A").
    Cached: a sync or an uploaded list spells its countries and states a few ways each, and
    this was a third of judging a profile."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    plain = plain.replace("&", " and ")
    for dropped in (".", "'", "\u2019"):
        plain = plain.replace(dropped, "")
    words = _NON_WORD.sub(" ", plain).replace("_", " ").split()
    while len(words) > 1 and words[0] == "the":
        words = words[1:]
    if len(words) > 1 and all(len(word) == 1 for word in words):
        return "".join(words)
    return " ".join(words)


def _spellings(name: str) -> list[str]:
    """A name and, for ISO's "Korea, Republic of" style, its natural order."""
    spellings = [name]
    if ", " in name:
        head, tail = name.split(", ", 1)
        spellings.append(f"{tail} {head}")
    return spellings


@cache
def _countries() -> dict[str, str]:
    table: dict[str, str] = {}
    for country in pycountry.countries:
        code = country.alpha_2
        names = [country.alpha_2, country.alpha_3, country.name]
        names += [getattr(country, a, None) or "" for a in ("official_name", "common_name")]
        for name in names:
            for spelling in _spellings(name) if name else []:
                table.setdefault(_lookup_form(spelling), code)
    table.update(_COUNTRY_ALIASES)
    return table


@cache
def _us_states() -> dict[str, str]:
    table: dict[str, str] = {}
    for subdivision in pycountry.subdivisions.get(country_code="US") or []:
        code = subdivision.code.removeprefix("US-")
        table[_lookup_form(code)] = code
        for spelling in _spellings(subdivision.name):
            table[_lookup_form(spelling)] = code
    for code in US_MILITARY_STATES:
        table[code.lower()] = code
    table.update(_US_STATE_ALIASES)
    return table


def normalize_country(value: str | None) -> str | None:
    """ISO 3166 alpha-2 for a country's code or name; ``None`` when it cannot be told."""
    if not value:
        return None
    form = _lookup_form(value)
    return _countries().get(form) if form else None


def normalize_us_state(value: str | None) -> str | None:
    """The two-letter code of a US state, DC, territory or military "state" (by code or
    name), ``None`` for anything else. UM is returned; it is not mailable (see
    :data:`US_MAILABLE_STATES`)."""
    if not value:
        return None
    return _us_states().get(_lookup_form(value))


def normalize_us_zip(value: str | None, state: str | None = None) -> str | None:
    """``12345`` or ``12345-6789``; ``None`` when ``value`` is not a ZIP code."""
    if not value:
        return None
    text = _DASHES.sub("-", _WS.sub("", value)).strip("-")
    if state in _ZERO_ZIP_STATES and re.fullmatch("[0-9]{3,4}", text):
        text = text.zfill(5)
    match = _US_ZIP.match(text)
    if match is None:
        return None
    five, plus4 = match.groups()
    return f"{five}-{plus4}" if plus4 else five


def normalize_gb_postcode(value: str | None) -> str | None:
    """A Royal Mail postcode as ``SW1A 1AA``; ``None`` when ``value`` is not one."""
    if not value:
        return None
    compact = _WS.sub("", value).upper()
    if _GB_POSTCODE.match(compact) is None:
        return None
    return f"{compact[:-3]} {compact[-3:]}"


def normalize_postal_code(value: str | None, country: str | None) -> str | None:
    """The postal code as printed: a valid US ZIP or GB postcode in its normal form, other
    values trimmed and upper-cased."""
    text = clean(value)
    if text is None:
        return None
    if country == "GB":
        return normalize_gb_postcode(text) or text.upper()
    if country == "US":
        return normalize_us_zip(text) or text.upper()
    return text.upper()


class InvalidAddress(ValueError):
    """An address a printer would refuse; the message says why (never quoting the data)."""


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
        home_country: str | None = None,
    ) -> Address:
        """A normalized, mailable address, or :class:`InvalidAddress` saying what is wrong.

        ``home_country`` (the organization's) stands in for a missing ``country``.
        """
        parts = {"name": clean(name), "line 1": clean(line1), "city": clean(city)}
        postal = clean(postal_code)
        missing = [label for label, value in parts.items() if not value]
        if not postal:
            missing.append("postal code")
        country_text = clean(country)
        assumed: str | None = None
        if country_text:
            iso = normalize_country(country_text)
        else:
            iso = normalize_country(home_country)
            assumed = iso
            if iso is None:
                missing.append("country")
        if missing:
            raise InvalidAddress("address is missing " + ", ".join(missing))
        if iso is None:
            raise InvalidAddress("unknown country (not an ISO 3166 country name or code)")
        assert postal is not None

        def invalid(problem: str) -> InvalidAddress:
            if assumed:
                problem += f" (no country given; the organization's home country {assumed} was"
                problem += " assumed)"
            return InvalidAddress(problem)

        region_clean = clean(region)
        if iso in US_TERRITORIES:
            iso, region_clean = "US", iso
        if iso == "US":
            if not region_clean:
                raise invalid("US address is missing the state")
            state = normalize_us_state(region_clean)
            if state is None:
                raise invalid("US address has an unknown state")
            if state not in US_MAILABLE_STATES:
                raise invalid(f"US address in {state}, which has no postal delivery")
            zip_code = normalize_us_zip(postal, state)
            if zip_code is None:
                raise invalid("US address has an invalid ZIP code (5 digits or ZIP+4)")
            region_clean, postal = state, zip_code
        elif iso == "GB":
            postcode = normalize_gb_postcode(postal)
            if postcode is None:
                raise invalid("UK address has an invalid postcode")
            postal = postcode
        else:
            postal = postal.upper()
        return cls(
            name=parts["name"] or "",
            line1=parts["line 1"] or "",
            city=parts["city"] or "",
            postal_code=postal,
            country=iso,
            line2=clean(line2),
            region=region_clean,
        )


def has_address(line1: str | None, city: str | None, postal_code: str | None) -> bool:
    """Whether a profile carries enough of an address to try mailing it."""
    return bool(clean(line1) and clean(city) and clean(postal_code))


def _street_key(value: str) -> str:
    words = _NON_ALNUM.sub(" ", value.lower()).split()
    return " ".join(_STREET_WORDS.get(w, w) for w in words)


def address_key(
    line1: str | None, postal_code: str | None, country: str | None, line2: str | None = None
) -> str | None:
    """The matching form of an address: street words abbreviated, ZIP5, country code.

    Two spellings of one address ("12 North Main Street, 10017-1234" and "12 N Main St,
    10017") give the same key. ``None`` without a street and postal code.

    Always at most :data:`ADDRESS_KEY_MAX` characters: a longer key keeps its first part and
    ends in ``~`` and 16 hex digits of the SHA-256 of the whole key, so it stays
    deterministic (equal addresses, equal keys) and distinct from other long addresses.
    """
    iso = normalize_country(country) or (country or "").upper()
    if not line1 or not postal_code:
        return None
    postal = postal_code.strip().upper().replace(" ", "")
    if iso == "US":
        postal = postal[:5]
    street = _street_key(line1 + (" " + line2 if line2 else ""))
    key = f"{iso}|{postal}|{street}"
    if len(key) <= ADDRESS_KEY_MAX:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{key[: ADDRESS_KEY_MAX - 17]}~{digest}"


def email_key(email: str | None) -> str | None:
    """Lower-cased, trimmed email; ``None`` for empty or obviously invalid values (no ``@``
    inside, whitespace inside) and for one longer than its column once lower-cased."""
    if not email:
        return None
    text = email.strip().lower()
    if "@" not in text or text.startswith("@") or text.endswith("@"):
        return None
    if _WS.search(text) or len(text) > EMAIL_KEY_MAX:
        return None
    return text
