"""judge_profile: what a profile's recipient row holds and why it cannot be mailed."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy import String

from mail_pipeline.db.models import Recipient
from mail_pipeline.domain.profiles import NO_NAME, Destination, ProfileData, judge_profile

US = Destination(home_country="US")


def data(**fields: Any) -> ProfileData:
    base: dict[str, Any] = {
        "profile_id": "P1",
        "email": "ann@example.com",
        "first_name": "Ann",
        "last_name": "Lee",
        "address1": "1 Main Street",
        "city": "New York",
        "region": "NY",
        "postal_code": "10017",
        "country": "United States",
        "properties": {"tier": "gold"},
    }
    return ProfileData(**{**base, **fields})


def assert_fits_its_columns(values: dict[str, Any]) -> None:
    for column, value in values.items():
        column_type = Recipient.__table__.c[column].type
        if isinstance(column_type, String) and value is not None:
            assert len(value) <= (column_type.length or 0), column


def test_a_good_profile_is_stored_in_normal_form_with_its_route() -> None:
    judged = judge_profile(
        data(first_name=" Ann ", region="new york", postal_code="10017 1234", country="U.S.A"),
        US,
    )
    assert judged.problem is None and judged.has_address and judged.printer == "lob"
    assert {k: judged.values[k] for k in ("first_name", "region", "postal_code", "country")} == {
        "first_name": "Ann",
        "region": "NY",
        "postal_code": "10017-1234",
        "country": "US",
    }
    assert judged.email_key == "ann@example.com"
    assert judged.address_key == "US|10017|1 main st"


@pytest.mark.parametrize(
    ("field", "label"),
    [
        ("email", "email"),
        ("first_name", "first name"),
        ("last_name", "last name"),
        ("address1", "address line 1"),
        ("address2", "address line 2"),
        ("city", "city"),
        ("region", "region"),
        ("postal_code", "postal code"),
        ("country", "country"),
    ],
)
def test_a_nul_in_any_text_field_is_a_problem_and_the_value_is_not_kept(
    field: str, label: str
) -> None:
    judged = judge_profile(data(**{field: "A\x00B"}), US)
    assert judged.problem == f"{label} contains a NUL character (U+0000)"
    assert all("\x00" not in str(v) for v in judged.values.values())
    assert_fits_its_columns(dict(judged.values))


def test_a_field_longer_than_its_column_is_a_problem_and_not_kept() -> None:
    judged = judge_profile(data(address1="1 " + "x" * 498), US)
    assert judged.problem == "address line 1 is 500 characters long; at most 200 fit"
    assert judged.values["address1"] is None and judged.values["city"] == "New York"
    assert_fits_its_columns(dict(judged.values))


def test_several_problems_are_all_named() -> None:
    judged = judge_profile(data(first_name="\x00", city="c" * 101), US)
    assert judged.problem == (
        "first name contains a NUL character (U+0000); city is 101 characters long; at most 100 fit"
    )


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_in_properties_is_a_problem(number: float) -> None:
    judged = judge_profile(data(properties={"stats": {"score": number}}), US)
    assert judged.problem == f'properties."stats"."score" is {number}; JSON numbers are finite'
    assert judged.values["properties"] == {}


def test_long_address_lines_fit_their_key_and_meet_lobs_limit() -> None:
    line1, line2 = "1" + " Longmeadow Close" * 8, "Unit" + " 9" * 75
    assert 280 < len(line1) + len(line2) <= 300
    judged = judge_profile(data(address1=line1, address2=line2), US)
    assert judged.problem == (
        f"address lines 1 and 2 are {len(line1) + len(line2)} characters together; "
        "Lob takes at most 50"
    )
    assert_fits_its_columns(dict(judged.values))
    # a printer without that limit takes it; the key is bounded all the same
    uk = judge_profile(
        data(address1=line1, address2=line2, region=None, postal_code="SW1A 1AA", country="UK")
    )
    assert uk.problem is None and uk.printer == "stannp"
    assert len(uk.address_key or "") == 300


@pytest.mark.parametrize(
    ("fields", "destination", "problem"),
    [
        ({"country": "ZZ"}, US, "unknown country (not an ISO 3166 country name or code)"),
        ({"region": None}, US, "US address is missing the state"),
        ({"postal_code": "1001"}, US, "US address has an invalid ZIP code (5 digits or ZIP+4)"),
        (
            {"country": "France", "region": None, "postal_code": "75001"},
            US,
            "no printer mails to FR",
        ),
        ({"first_name": None, "last_name": None}, US, "address is missing name"),
        (
            {"address1": "Apartment 12B, The Old Granary Building, 1450 Long Meadow Road"},
            US,
            "address lines 1 and 2 are 62 characters together; Lob takes at most 50",
        ),
        (
            {"country": None, "region": None, "postal_code": "SW1A 1AA"},
            US,
            "US address is missing the state (no country given; the organization's home "
            "country US was assumed)",
        ),
    ],
)
def test_an_unmailable_address_is_a_problem_at_sync(
    fields: dict[str, Any], destination: Destination, problem: str
) -> None:
    assert judge_profile(data(**fields), destination).problem == problem


def test_the_route_takes_the_organizations_preference() -> None:
    long_line = "Apartment 12B, The Old Granary Building, 1450 Long Meadow Road"
    preferring = Destination(home_country="US", printer_preference="intelliprint")
    judged = judge_profile(data(address1=long_line), preferring)
    assert judged.problem is None and judged.printer == "intelliprint"


def test_a_missing_country_takes_the_home_country() -> None:
    judged = judge_profile(data(country=None), US)
    assert (judged.problem, judged.values["country"]) == (None, "US")
    uk = judge_profile(
        data(country=None, region=None, postal_code="sw1a1aa"), Destination(home_country="GB")
    )
    assert (uk.problem, uk.values["country"], uk.values["postal_code"]) == (
        None,
        "GB",
        "SW1A 1AA",
    )


def test_without_a_full_address_it_waits_for_enrichment_but_needs_a_name() -> None:
    waiting = judge_profile(data(address1=None, city=None, postal_code=None, country="ZZ"), US)
    assert (waiting.problem, waiting.has_address) == (None, False)
    nameless = judge_profile(data(first_name=None, last_name=None, address1=None), US)
    assert nameless.problem == NO_NAME


def test_a_normal_form_longer_than_its_column_is_a_problem_not_a_failed_write() -> None:
    judged = judge_profile(
        data(country="Germany", region=None, postal_code="\u00df" * 15), US
    )  # upper-cased, 15 "ß" are 30 "S"
    assert judged.problem == "postal code is 30 characters long; at most 20 fit"
    assert judged.values["postal_code"] == "\u00df" * 15
