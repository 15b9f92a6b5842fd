"""Design validation and personalization: what ends up printed on the card."""

from __future__ import annotations

import pytest

from mail_pipeline.integrations.renderer.models import (
    InvalidDesign,
    InvalidProofRequest,
    PostcardContent,
    PostcardDesign,
    ProofRequest,
)
from mail_pipeline.integrations.renderer.personalize import fill, name_case, personalize

DESIGN = {
    "template": "classic",
    "brand_name": "Northwind Coffee",
    "headline": "{first_name}, your autumn treat is waiting",
    "body": "Hi {first_name|there}, enjoy 20% off in {city}.",
    "offer_code": "AUTUMN20",
    "background_color": "#FDF6EC",
    "accent_color": "#b52",
    "back_message": "Dear {full_name|friend},\nsee you soon.",
    "size": "4x6",
}


def request(**overrides: object) -> ProofRequest:
    fields: dict[str, object] = {
        "recipient_id": 11,
        "campaign_id": 3,
        "design": PostcardDesign.from_mapping(DESIGN),
        "address_lines": ("123 Main Street", "Apt 4B"),
        "city": "Springfield",
        "postal_code": "62701",
        "country": "US",
        "region": "IL",
        "first_name": "Jane",
        "last_name": "Doe",
    }
    fields.update(overrides)
    return ProofRequest(**fields)  # type: ignore[arg-type]


def test_from_mapping_normalizes_colours_and_keeps_fields() -> None:
    design = PostcardDesign.from_mapping(DESIGN)
    assert design.background_color == "#fdf6ec"
    assert design.accent_color == "#bb5522"
    assert design.offer_code == "AUTUMN20"
    assert PostcardDesign.from_mapping(design.to_mapping()) == design


def test_from_mapping_lists_every_problem_in_one_readable_error() -> None:
    bad = {
        **DESIGN,
        "accent_color": "blue",
        "size": "5x7",
        "headine": "typo",
        "headline": "Hi {first name}",
    }
    with pytest.raises(InvalidDesign) as info:
        PostcardDesign.from_mapping(bad)
    message = str(info.value)
    assert "unknown field 'headine'" in message
    assert len(info.value.problems) == 1  # unknown keys are reported before anything else
    del bad["headine"]
    with pytest.raises(InvalidDesign) as info:
        PostcardDesign.from_mapping(bad)
    message = str(info.value)
    assert "accent_color 'blue' is not a #RRGGBB colour" in message
    assert "size '5x7' is not one of 4x6, A6" in message
    assert "invalid placeholder '{first name}'" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"template": "classic", "brand_name": "B"}, "headline is missing"),
        ({**DESIGN, "headline": "Hello {first_name"}, "unmatched '{'"),
        ({**DESIGN, "headline": "x" * 141}, "headline is 141 characters"),
        ({**DESIGN, "offer_code": "A" * 40}, "offer_code must be 1-32"),
        ({**DESIGN, "template": "../etc"}, "template '../etc'"),
        ({**DESIGN, "headline": 42}, "headline must be text"),
        (["not", "a", "mapping"], "expected a JSON object"),
    ],
)
def test_from_mapping_rejects_bad_designs(data: object, expected: str) -> None:
    with pytest.raises(InvalidDesign, match=expected.replace("{", r"\{").replace("(", r"\(")):
        PostcardDesign.from_mapping(data)  # type: ignore[arg-type]


def test_literal_braces_are_allowed() -> None:
    design = PostcardDesign.from_mapping({**DESIGN, "headline": "Use {{code}} {first_name}"})
    assert personalize(request(design=design)).headline == "Use {code} Jane"


def test_personalize_fills_placeholders_and_builds_the_us_address_block() -> None:
    content = personalize(request(first_name="jane", last_name="DOE"))
    assert content.headline == "Jane, your autumn treat is waiting"
    assert content.body == "Hi Jane, enjoy 20% off in Springfield."
    assert content.back_message == "Dear Jane Doe,\nsee you soon."
    assert content.address_block == (
        "Jane Doe",
        "123 Main Street",
        "Apt 4B",
        "Springfield, IL 62701",
    )


def test_missing_first_name_drops_the_placeholder_and_its_punctuation() -> None:
    content = personalize(request(first_name=None, last_name=None))
    assert content.headline == "Your autumn treat is waiting"
    assert content.body == "Hi there, enjoy 20% off in Springfield."
    assert content.back_message.startswith("Dear friend,")
    assert content.address_block[0] == "Current Resident"


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("Hi {first_name}, welcome back", {}, "Hi, welcome back"),
        ("{first_name}! Treat yourself", {}, "Treat yourself"),
        ("Dear {first_name} {last_name},", {}, "Dear,"),
        ("Hello {vip_tier|friend}", {"vip_tier": "Gold"}, "Hello Gold"),
        ("Hello {first_name}", {"first_name": "{last_name}"}, "Hello {last_name}"),
    ],
)
def test_fill(text: str, values: dict[str, str], expected: str) -> None:
    assert fill(text, values) == expected


def test_extra_properties_are_placeholders_but_known_fields_win() -> None:
    design = PostcardDesign.from_mapping({**DESIGN, "headline": "{first_name}: {tier} perks"})
    req = request(design=design, properties={"tier": "gold", "first_name": "Mallory"})
    assert personalize(req).headline == "Jane: gold perks"


def test_name_case_only_fixes_single_case_names() -> None:
    assert name_case("mary-jane o'neil") == "Mary-Jane O'Neil"
    assert name_case("JANE") == "Jane"
    assert name_case("McDonald") == "McDonald"


def test_uk_address_block_puts_town_and_postcode_on_their_own_lines() -> None:
    design = PostcardDesign.from_mapping({**DESIGN, "size": "A6"})
    req = request(
        design=design,
        country="United Kingdom",
        city="London",
        postal_code="sw1a1aa",
        region=None,
        address_lines=("10 Downing St",),
    )
    assert personalize(req).address_block == ("Jane Doe", "10 Downing St", "LONDON", "SW1A 1AA")


def test_foreign_address_gets_a_country_line() -> None:
    req = request(country="DE", city="Berlin", postal_code="10115", region=None)
    assert personalize(req).address_block[-2:] == ("10115 Berlin", "GERMANY")


def test_request_without_an_address_is_refused_readably() -> None:
    with pytest.raises(InvalidProofRequest, match="missing an address line, the city"):
        request(address_lines=("  ",), city="")


def test_fingerprint_is_stable_and_changes_with_content() -> None:
    assert request().fingerprint() == request().fingerprint()
    assert len(request().fingerprint()) == 16
    assert request().fingerprint() != request(first_name="John").fingerprint()
    assert request().fingerprint() != request(properties={"tier": "gold"}).fingerprint()


def test_content_round_trips_through_fields() -> None:
    content = personalize(request())
    assert PostcardContent.from_fields(content.to_fields()) == content
    with pytest.raises(ValueError, match="unknown size"):
        PostcardContent.from_fields({**content.to_fields(), "size": "9x12"})
