"""Address rules: the country, US state, ZIP and UK postcode tables, the normal forms, and the
matching keys - parametrized over the tables, and property-checked for normalization."""

from __future__ import annotations

import re

import pycountry
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mail_pipeline.domain.addresses import (
    US_MAILABLE_STATES,
    Address,
    InvalidAddress,
    address_key,
    email_key,
    has_address,
    normalize_country,
    normalize_gb_postcode,
    normalize_postal_code,
    normalize_us_state,
    normalize_us_zip,
)
from mail_pipeline.domain.fields import ADDRESS_KEY_MAX

ISO_CODES = {c.alpha_2 for c in pycountry.countries}

# -- countries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("United States", "US"),
        ("usa", "US"),
        ("USA", "US"),
        (" U.S.A. ", "US"),
        ("U.S.A", "US"),
        ("U.S.", "US"),
        ("U. S. A.", "US"),
        ("United States.", "US"),
        ("The United States", "US"),
        ("the united states of america", "US"),
        ("UNITED   STATES", "US"),
        ("United States!", "US"),
        ("America", "US"),
        ("United Kingdom", "GB"),
        ("uk", "GB"),
        ("U.K.", "GB"),
        ("GB", "GB"),
        ("GBR", "GB"),
        ("Great Britain", "GB"),
        ("England", "GB"),
        ("Scotland", "GB"),
        ("Wales", "GB"),
        ("Northern Ireland", "GB"),
        ("United Kingdom of Great Britain and Northern Ireland", "GB"),
        ("de", "DE"),
        ("DEU", "DE"),
        ("Germany", "DE"),
        ("France", "FR"),
        ("The Netherlands", "NL"),
        ("Côte d'Ivoire", "CI"),
        ("Cote dIvoire", "CI"),
        ("South Korea", "KR"),
        ("Korea, Republic of", "KR"),
        ("Republic of Korea", "KR"),
        ("Bolivia", "BO"),
        ("Puerto Rico", "PR"),
        ("U.S. Virgin Islands", "VI"),
        ("Narnia", None),
        ("Atlantis", None),
        ("ZZ", None),
        ("XX", None),
        ("", None),
        ("   ", None),
        ("...", None),
        (None, None),
    ],
)
def test_country_names_become_iso_codes(text: str | None, iso: str | None) -> None:
    assert normalize_country(text) == iso


@pytest.mark.parametrize("country", list(pycountry.countries), ids=lambda c: c.alpha_2)
def test_every_iso_country_is_known_by_its_codes_and_names(country: object) -> None:
    code = country.alpha_2  # type: ignore[attr-defined]
    names = [code, country.alpha_3, country.name]  # type: ignore[attr-defined]
    names += [getattr(country, a) for a in ("official_name", "common_name") if hasattr(country, a)]
    for name in names:
        assert normalize_country(name) == code, name
        assert normalize_country(name.upper()) == code, name
        assert normalize_country(f" The {name}. ") == code, name


# -- US states and ZIP codes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("CA", "CA"),
        ("ca", "CA"),
        ("California", "CA"),
        ("CALIFORNIA", "CA"),
        ("N.Y.", "NY"),
        ("New York", "NY"),
        ("District of Columbia", "DC"),
        ("Washington, D.C.", "DC"),
        ("DC", "DC"),
        ("Puerto Rico", "PR"),
        ("GU", "GU"),
        ("U.S. Virgin Islands", "VI"),
        ("American Samoa", "AS"),
        ("Northern Mariana Islands", "MP"),
        ("AA", "AA"),
        ("Armed Forces Europe", "AE"),
        ("Armed Forces Pacific", "AP"),
        ("UM", "UM"),
        ("Calif", None),
        ("ZZ", None),
        ("", None),
        (None, None),
    ],
)
def test_us_states_by_code_or_name(text: str | None, state: str | None) -> None:
    assert normalize_us_state(text) == state


def test_the_mailable_states_are_the_fifty_dc_territories_and_military() -> None:
    assert len(US_MAILABLE_STATES) == 51 + 5 + 3
    assert {"PR", "GU", "VI", "AS", "MP", "AA", "AE", "AP", "DC"} <= US_MAILABLE_STATES
    assert "UM" not in US_MAILABLE_STATES
    for subdivision in pycountry.subdivisions.get(country_code="US") or []:
        code = subdivision.code.removeprefix("US-")
        assert normalize_us_state(subdivision.name) == code
        assert (code in US_MAILABLE_STATES) == (code != "UM")


@pytest.mark.parametrize(
    ("text", "state", "zip_code"),
    [
        ("10017", None, "10017"),
        ("10017-1234", None, "10017-1234"),
        ("10017 1234", None, "10017-1234"),
        ("100171234", None, "10017-1234"),
        (" 10017 - 1234 ", None, "10017-1234"),
        ("10017\u20131234", None, "10017-1234"),
        ("10017-", None, "10017"),
        ("2108", "MA", "02108"),
        ("901", "PR", "00901"),
        ("2108", "CA", None),
        ("1001", None, None),
        ("1001712", None, None),
        ("10017-12", None, None),
        ("ABCDE", None, None),
        ("\u0661\u0660\u0660\u0661\u0667", None, None),  # digits, but not ASCII ones
        ("10017 please leave at the door", None, None),
        ("", None, None),
    ],
)
def test_us_zip_codes(text: str, state: str | None, zip_code: str | None) -> None:
    assert normalize_us_zip(text, state) == zip_code


# -- UK postcodes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "postcode"),
    [
        ("SW1A 1AA", "SW1A 1AA"),
        ("sw1a1aa", "SW1A 1AA"),
        (" sw1a  1aa ", "SW1A 1AA"),
        ("M1 1AE", "M1 1AE"),
        ("M11AE", "M1 1AE"),
        ("B33 8TH", "B33 8TH"),
        ("CR2 6XH", "CR2 6XH"),
        ("DN55 1PT", "DN55 1PT"),
        ("EC1A 1BB", "EC1A 1BB"),
        ("W1A 0AX", "W1A 0AX"),
        ("CF10 1EP", "CF10 1EP"),
        ("GIR 0AA", "GIR 0AA"),
        ("Q1 1AA", None),  # Q never starts a postcode
        ("SW1A 1CI", None),  # C and I never end one
        ("12345", None),
        ("SW1A", None),
        ("SW1A 1AAA", None),
        ("", None),
    ],
)
def test_uk_postcodes(text: str, postcode: str | None) -> None:
    assert normalize_gb_postcode(text) == postcode


def test_postal_codes_as_printed() -> None:
    assert normalize_postal_code("sw1a1aa", "GB") == "SW1A 1AA"
    assert normalize_postal_code("10017 1234", "US") == "10017-1234"
    assert normalize_postal_code(" h0h 0h0 ", "CA") == "H0H 0H0"
    assert normalize_postal_code("not one", "GB") == "NOT ONE"
    assert normalize_postal_code(None, "US") is None


# -- Address.build --------------------------------------------------------------------------


def build(**fields: str | None) -> Address:
    defaults: dict[str, str | None] = {
        "name": "Jane Doe",
        "line1": "1 Main St",
        "city": "Austin",
        "postal_code": "78701",
        "country": "US",
        "region": "TX",
    }
    return Address.build(**{**defaults, **fields})  # type: ignore[arg-type]


def test_build_normalizes_and_names_what_is_missing() -> None:
    address = build(name=" Jane  Doe ", country="usa", region="texas", postal_code="78701 1234")
    assert (address.name, address.country, address.region, address.postal_code) == (
        "Jane Doe",
        "US",
        "TX",
        "78701-1234",
    )
    with pytest.raises(InvalidAddress, match="missing city, postal code"):
        build(city=" ", postal_code=None)
    with pytest.raises(InvalidAddress, match="missing name"):
        build(name=None)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"country": "Narnia"}, "unknown country"),
        ({"country": "ZZ"}, "unknown country"),
        ({"region": None}, "US address is missing the state"),
        ({"region": "Calif"}, "US address has an unknown state"),
        ({"region": "UM"}, "US address in UM, which has no postal delivery"),
        ({"postal_code": "7870"}, "invalid ZIP code"),
        ({"postal_code": "ABCDE"}, "invalid ZIP code"),
        ({"country": "GB", "region": None, "postal_code": "12345"}, "invalid postcode"),
        ({"country": None}, "address is missing country"),
    ],
)
def test_build_refuses_what_a_printer_would_refuse(fields: dict[str, str], problem: str) -> None:
    with pytest.raises(InvalidAddress, match=problem):
        build(**fields)


def test_a_refusal_never_quotes_the_data() -> None:
    with pytest.raises(InvalidAddress) as info:
        build(country="Secret Land", line1="42 Private Road")
    assert "Secret" not in str(info.value) and "Private" not in str(info.value)


@pytest.mark.parametrize(
    ("spelling", "country"),
    [("U.S.A", "US"), ("United States.", "US"), ("The United States", "US"), ("america", "US")],
)
def test_spellings_of_the_united_states_are_mailable(spelling: str, country: str) -> None:
    assert build(country=spelling).country == country


def test_territories_are_mailed_as_us_addresses_with_their_state() -> None:
    address = build(country="Puerto Rico", region="San Juan", postal_code="00901")
    assert (address.country, address.region, address.postal_code) == ("US", "PR", "00901")
    assert build(country="GU", region=None, postal_code="96910").region == "GU"
    with pytest.raises(InvalidAddress, match="no postal delivery"):
        build(country="United States Minor Outlying Islands", region=None)


def test_a_missing_country_is_the_home_country_judged_by_its_rules() -> None:
    assert build(country=None, home_country="US").country == "US"
    uk = build(country=None, region=None, postal_code="sw1a1aa", home_country="GB")
    assert (uk.country, uk.postal_code) == ("GB", "SW1A 1AA")
    with pytest.raises(InvalidAddress) as info:
        build(country=None, region=None, postal_code="SW1A 1AA", home_country="US")
    assert str(info.value) == (
        "US address is missing the state (no country given; the organization's home "
        "country US was assumed)"
    )
    # a country that is given is never replaced by the home country
    with pytest.raises(InvalidAddress, match="unknown country"):
        build(country="ZZ", home_country="US")


# -- keys -----------------------------------------------------------------------------------


def test_two_spellings_of_one_address_share_a_key() -> None:
    a = address_key("12 North Main Street", "10017-1234", "United States")
    b = address_key("12  N. Main St", "10017", "US")
    assert a == b == "US|10017|12 n main st"


def test_uk_postcodes_match_with_or_without_space() -> None:
    assert address_key("1 High Street", "sw1a2aa", "UK") == address_key(
        "1 High St", "SW1A 2AA", "GB"
    )


def test_address_without_street_or_postcode_has_no_key() -> None:
    assert address_key(None, "10017", "US") is None
    assert address_key("1 Main St", None, "US") is None


def test_a_long_address_key_is_bounded_deterministically() -> None:
    line1, line2 = "1" + " Long Meadow" * 16, "Building" + " 9" * 70  # ~290 characters
    key = address_key(line1, "10017", "US", line2)
    assert key is not None and len(key) == ADDRESS_KEY_MAX
    assert key == address_key(line1, "10017", "US", line2)
    assert re.search(r"~[0-9a-f]{16}$", key)
    assert key != address_key(line1, "10017", "US", line2 + " 1")
    assert key.startswith("US|10017|1 long meadow")


def test_email_key_and_has_address() -> None:
    assert email_key("  Jane@Example.COM ") == "jane@example.com"
    assert email_key("not-an-email") is None
    assert email_key("jane doe@example.com") is None
    assert email_key("a" * 300 + "@example.com") is not None
    assert email_key("a" * 310 + "@example.com") is None
    # lower-casing may lengthen a text: the key still fits its column, or is None
    assert email_key("\u0130" * 160 + "@x.io") is None
    assert has_address("1 Main", "Austin", "78701")
    assert not has_address("1 Main", "", "78701")


# -- properties -----------------------------------------------------------------------------

_SPELLING_CHANGES = st.sampled_from(
    [
        lambda s: s,
        str.upper,
        str.lower,
        lambda s: f"  {s}  ",
        lambda s: f"The {s}",
        lambda s: f"{s}.",
        lambda s: f"{s}!",
        lambda s: s.replace(" ", "   "),
    ]
)


@given(
    country=st.sampled_from(list(pycountry.countries)),
    attribute=st.sampled_from(["alpha_2", "alpha_3", "name", "official_name", "common_name"]),
    change=_SPELLING_CHANGES,
)
def test_any_spelling_of_an_iso_country_finds_it(
    country: object, attribute: str, change: object
) -> None:
    name = getattr(country, attribute, None) or country.name  # type: ignore[attr-defined]
    assert normalize_country(change(name)) == country.alpha_2  # type: ignore[attr-defined,operator]


@given(st.text())
def test_any_text_is_a_known_country_or_none(text: str) -> None:
    iso = normalize_country(text)
    assert iso is None or iso in ISO_CODES


@given(st.text(max_size=12), st.sampled_from([None, "MA", "NY", "PR"]))
def test_a_zip_is_refused_or_in_normal_form(text: str, state: str | None) -> None:
    zip_code = normalize_us_zip(text, state)
    assert zip_code is None or re.fullmatch(r"[0-9]{5}(-[0-9]{4})?", zip_code)
    if zip_code is not None:
        assert normalize_us_zip(zip_code, state) == zip_code


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 abc", max_size=9))
def test_a_postcode_is_refused_or_in_normal_form(text: str) -> None:
    postcode = normalize_gb_postcode(text)
    assert postcode is None or re.fullmatch(r"[A-Z0-9]{2,4} [0-9][A-Z]{2}", postcode)
    if postcode is not None:
        assert normalize_gb_postcode(postcode) == postcode
