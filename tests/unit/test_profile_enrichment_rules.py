"""Profile enrichment rules: which properties a design prints, the 24-hour refresh rule, how
fetched values merge, and which defaults a proof used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mail_pipeline.domain.placeholders import Placeholder, placeholders, split_placeholder
from mail_pipeline.domain.profile_enrichment import (
    REFRESH_AFTER,
    design_properties,
    merge_properties,
    needs_refresh,
)
from mail_pipeline.integrations.renderer.models import PostcardDesign, ProofRequest
from mail_pipeline.integrations.renderer.personalize import defaults_used, fill

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def design(**texts: str) -> PostcardDesign:
    return PostcardDesign.from_mapping({"template": "t", "brand_name": "Brew", **texts})


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        ({"headline": "Hi {first_name}"}, set()),
        ({"headline": "Hi {first_name}, {loyalty_tier|member}!"}, {"loyalty_tier"}),
        (
            {"headline": "Hi", "body": "Loved {last_product}?", "back_message": "{ tier |x}"},
            {"last_product", "tier"},
        ),
        ({"headline": "Use {offer_code} in {city}, {country}"}, set()),
        ({"headline": "{{literal}} braces"}, set()),
        ({"headline": "{a|}{a|b}{B_2}"}, {"a", "B_2"}),
    ],
)
def test_design_properties(texts: dict[str, str], expected: set[str]) -> None:
    assert design_properties(design(**texts)) == frozenset(expected)


def test_brand_name_is_not_personalized() -> None:
    assert design_properties(design(headline="Hi", brand_name="{shop}")) == frozenset()


def test_placeholder_parsing_is_the_renderers() -> None:
    assert split_placeholder(" tier |gold|x") == Placeholder("tier", "gold|x")
    assert split_placeholder("tier") == Placeholder("tier", None)
    assert list(placeholders("{a} {{b}} {1x} {c|d}")) == [
        Placeholder("a", None),
        Placeholder("c", "d"),
    ]
    # fill still reads defaults the same way
    assert fill("{tier|member} {first_name}", {"first_name": "Ana"}) == "member Ana"


@pytest.mark.parametrize(
    ("enriched_at", "due"),
    [
        (None, True),
        (NOW - timedelta(hours=1), False),
        (NOW - REFRESH_AFTER + timedelta(seconds=1), False),
        (NOW - REFRESH_AFTER - timedelta(seconds=1), True),
        (NOW - timedelta(days=3), True),
    ],
)
def test_refresh_rule(enriched_at: datetime | None, due: bool) -> None:
    assert needs_refresh(enriched_at, NOW) is due


def test_merge_sets_replaces_and_removes_only_wanted_names() -> None:
    existing = {"loyalty_tier": "bronze", "last_product": "old", "favorite": "tea"}
    merge = merge_properties(
        existing,
        {"loyalty_tier": "gold", "score": 3, "other": "x"},
        {"loyalty_tier", "last_product", "score"},
    )
    assert merge.properties == {"loyalty_tier": "gold", "score": 3, "favorite": "tea"}
    assert merge.set == ("loyalty_tier", "score")
    assert merge.missing == ("last_product",)
    assert merge.dropped == {}
    assert existing["last_product"] == "old"  # not modified


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_null_or_blank_is_missing(blank: Any) -> None:
    merge = merge_properties({"tier": "gold"}, {"tier": blank}, {"tier"})
    assert merge.missing == ("tier",)
    assert merge.properties == {}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("nan"), "is nan; JSON numbers are finite"),
        ("a\x00b", "NUL character"),
        ("\ud800", "unpaired surrogate"),
        ({"nested": 1}, "is an object; a postcard prints text or a number"),
        (["a"], "is a list"),
        (True, "is a boolean"),
    ],
)
def test_bad_value_is_dropped_with_a_reason_and_the_old_one_kept(value: Any, reason: str) -> None:
    merge = merge_properties({"tier": "gold"}, {"tier": value}, {"tier"})
    assert merge.properties == {"tier": "gold"}
    assert merge.set == () and merge.missing == ()
    assert reason in merge.dropped["tier"]
    assert "tier" in merge.dropped["tier"]


def _request(properties: dict[str, str], **texts: str) -> ProofRequest:
    return ProofRequest(
        recipient_id=1,
        campaign_id=1,
        design=design(**texts),
        address_lines=("1 Main St",),
        city="Austin",
        postal_code="78701",
        country="US",
        first_name="ana",
        properties=properties,
    )


def test_defaults_used_names_what_printed_from_a_default() -> None:
    request = _request(
        {"loyalty_tier": "gold", "blank": "  "},
        headline="{first_name|friend}, {loyalty_tier|member}",
        body="{last_product|our best seller} {blank|x} {nodefault}",
        back_message="{region|your state}",
    )
    # first_name and loyalty_tier have values; nodefault has no default (dropped, not a default)
    assert defaults_used(request) == ("blank", "last_product", "region")
    assert defaults_used(_request({}, headline="Hello")) == ()
