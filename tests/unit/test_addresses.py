from __future__ import annotations

import pytest

from mail_pipeline.domain.addresses import (
    Address,
    InvalidAddress,
    address_key,
    email_key,
    has_address,
    normalize_country,
)


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("United States", "US"),
        ("usa", "US"),
        (" U.S.A. ", "US"),
        ("United Kingdom", "GB"),
        ("uk", "GB"),
        ("GB", "GB"),
        ("de", "DE"),
        ("Narnia", None),
        ("", None),
        (None, None),
    ],
)
def test_country_names_become_iso_codes(text: str | None, iso: str | None) -> None:
    assert normalize_country(text) == iso


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


def test_build_normalizes_and_names_what_is_missing() -> None:
    address = Address.build(
        name=" Jane  Doe ",
        line1="1 Main St",
        city="Austin",
        postal_code="78701",
        country="usa",
        region="tx",
    )
    assert (address.name, address.country, address.region) == ("Jane Doe", "US", "TX")
    with pytest.raises(InvalidAddress, match="missing city, postal_code"):
        Address.build(
            name="J", line1="1 Main", city=" ", postal_code=None, country="US", region="TX"
        )
    with pytest.raises(InvalidAddress, match="unknown country 'Narnia'"):
        Address.build(name="J", line1="1", city="c", postal_code="1", country="Narnia")
    with pytest.raises(InvalidAddress, match="missing the state"):
        Address.build(name="J", line1="1", city="c", postal_code="1", country="US")


def test_email_key_and_has_address() -> None:
    assert email_key("  Jane@Example.COM ") == "jane@example.com"
    assert email_key("not-an-email") is None
    assert has_address("1 Main", "Austin", "78701")
    assert not has_address("1 Main", "", "78701")
