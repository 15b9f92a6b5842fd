"""Judging a CDP profile once, at sync: what its recipient row holds and whether it can be
mailed.

:func:`judge_profile` turns a profile's fields into the values of a recipient row that the
database stores as they are, and says - before a proof is paid for - why the profile cannot
be mailed, if it cannot. The rules, in order:

1. every text field is checked against its column (:mod:`mail_pipeline.domain.fields`):
   a value with a forbidden character or longer than its column is not stored (the column
   stays empty) and the profile is a problem naming the field; so are properties that
   ``jsonb`` would not store as sent (they are stored as ``{}``);
2. derived keys always fit their columns: ``email_key`` is ``None`` for an email longer
   than its column once lower-cased, ``address_key`` is bounded by a hash
   (:func:`~mail_pipeline.domain.addresses.address_key`);
3. a profile with a full address (street, city, postal code) must be mailable: a name, an
   address valid for its country (a missing country is the organization's home country),
   a printer route for that country given the organization's preference, and within that
   printer's limits; the address is stored in its normal form (ISO country, US state code,
   ZIP or postcode format);
4. a profile without a full address goes to address enrichment, but still needs a name.

Whatever is wrong becomes the recipient's reason (fields and problems, never values), and
the sync rules (:mod:`mail_pipeline.domain.sync`) decide the state.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from mail_pipeline.domain.addresses import (
    Address,
    InvalidAddress,
    address_key,
    clean,
    email_key,
    has_address,
    normalize_country,
)
from mail_pipeline.domain.fields import (
    ADDRESS_LINE_MAX,
    CITY_MAX,
    EMAIL_MAX,
    NAME_MAX,
    POSTAL_CODE_MAX,
    REGION_MAX,
    InvalidField,
    check_properties,
    check_text,
)
from mail_pipeline.domain.routing import (
    DEFAULT_ROUTES,
    PRINTER_COUNTRIES,
    NoRoute,
    choose_printer,
    printer_problem,
)

#: The raw country text is not stored (its ISO code is); it is only checked for characters.
_COUNTRY_TEXT_MAX = 200

#: profile attribute -> (what a person calls it, column size, whitespace collapsed).
_TEXT_FIELDS: dict[str, tuple[str, int, bool]] = {
    "email": ("email", EMAIL_MAX, False),
    "first_name": ("first name", NAME_MAX, True),
    "last_name": ("last name", NAME_MAX, True),
    "address1": ("address line 1", ADDRESS_LINE_MAX, True),
    "address2": ("address line 2", ADDRESS_LINE_MAX, True),
    "city": ("city", CITY_MAX, True),
    "region": ("region", REGION_MAX, True),
    "postal_code": ("postal code", POSTAL_CODE_MAX, True),
}

NO_NAME = "the profile has no name to address a postcard to"


@dataclass(frozen=True)
class ProfileData:
    """A profile's fields as the CDP sent them (text already checked to be text)."""

    profile_id: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Destination:
    """What the organization adds to judge an address: its home country (stands in for a
    missing country), its printer preference and the routing tables."""

    home_country: str | None = None
    printer_preference: str | None = None
    routes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ROUTES))
    serves: Mapping[str, Collection[str]] = field(default_factory=lambda: dict(PRINTER_COUNTRIES))


@dataclass(frozen=True)
class JudgedProfile:
    profile_id: str
    #: The recipient's columns: email, email_key, names, address, country, address_key,
    #: properties - every value storable as it is.
    values: Mapping[str, Any]
    #: A full address (street, city, postal code) - else it waits for address enrichment.
    has_address: bool
    #: Why it cannot be mailed ("; "-joined), or ``None``.
    problem: str | None = None
    #: The printer its route chose (when the address was judged mailable).
    printer: str | None = None

    @property
    def email_key(self) -> str | None:
        return self.values.get("email_key")

    @property
    def address_key(self) -> str | None:
        return self.values.get("address_key")


def _text_field(label: str, raw: str | None, limit: int, collapse: bool) -> str | None:
    if raw is None:
        return None
    check_text(label, raw, sys.maxsize)  # characters, before whitespace is collapsed
    text = clean(raw) if collapse else (raw.strip() or None)
    return check_text(label, text, limit)


def judge_profile(data: ProfileData, destination: Destination | None = None) -> JudgedProfile:
    """The recipient values of ``data`` and why it cannot be mailed (see the module)."""
    destination = destination or Destination()
    problems: list[str] = []
    text: dict[str, str | None] = {}
    for attribute, (label, limit, collapse) in _TEXT_FIELDS.items():
        try:
            text[attribute] = _text_field(label, getattr(data, attribute), limit, collapse)
        except InvalidField as exc:
            text[attribute] = None
            problems.append(str(exc))
    try:
        country_text = _text_field("country", data.country, _COUNTRY_TEXT_MAX, True)
    except InvalidField as exc:
        country_text = None
        problems.append(str(exc))
    try:
        properties = check_properties(data.properties)
    except InvalidField as exc:
        properties = {}
        problems.append(str(exc))

    name = " ".join(p for p in (text["first_name"], text["last_name"]) if p) or None
    full_address = has_address(text["address1"], text["city"], text["postal_code"])
    country = normalize_country(country_text)
    printer: str | None = None
    if not problems and full_address:
        try:
            address = Address.build(
                name=name,
                line1=text["address1"],
                line2=text["address2"],
                city=text["city"],
                region=text["region"],
                postal_code=text["postal_code"],
                country=country_text,
                home_country=destination.home_country,
            )
        except InvalidAddress as exc:
            problems.append(str(exc))
        else:
            normal = {"region": address.region, "postal_code": address.postal_code}
            try:  # a normal form may be longer ("ß" upper-cased is "SS")
                for attribute, value in normal.items():
                    label, limit, _collapse = _TEXT_FIELDS[attribute]
                    check_text(label, value, limit)
            except InvalidField as exc:
                problems.append(str(exc))
            else:
                text.update(normal)
                country = address.country
                printer, problem = _route(address, destination)
                if problem:
                    problems.append(problem)
    elif not problems and name is None:
        problems.append(NO_NAME)

    key = address_key(text["address1"], text["postal_code"], country, text["address2"])
    values: dict[str, Any] = {
        "email": text["email"],
        "email_key": email_key(text["email"]),
        "first_name": text["first_name"],
        "last_name": text["last_name"],
        "address1": text["address1"],
        "address2": text["address2"],
        "city": text["city"],
        "region": text["region"],
        "postal_code": text["postal_code"],
        "country": country,
        "address_key": key,
        "properties": properties,
    }
    return JudgedProfile(
        data.profile_id,
        values,
        full_address,
        "; ".join(problems) or None,
        printer if not problems else None,
    )


def _route(address: Address, destination: Destination) -> tuple[str | None, str | None]:
    """(printer, why it would refuse the address) for a mailable address."""
    try:
        printer = choose_printer(
            address.country,
            destination.printer_preference,
            routes=destination.routes,
            serves=destination.serves,
        )
    except NoRoute as exc:
        return None, str(exc)
    return printer, printer_problem(printer, address.line1, address.line2)
