"""Suppressions (``domain.suppressions``) and how the sync decides with them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.domain.suppressions import SuppressionRules, place_problem
from mail_pipeline.domain.sync import Decision, ProfileFacts, SyncDecider

S = RecipientStatus
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
RULES = SuppressionRules.of(
    min_days_between_mailings=30,
    recent_purchase_days=14,
    allowed_regions=[" ca", "OR "],
    allowed_postal_prefixes=["94", "97 2"],
)
ANN = ProfileFacts(
    "p1", "ann@example.com", "US|94110|12 main st", True, region="CA", postal_code="94110"
)


def test_rules_are_normalized_and_empty_settings_are_off() -> None:
    assert RULES.allowed_regions == frozenset({"CA", "OR"})
    assert RULES.allowed_postal_prefixes == ("94", "972")
    off = SuppressionRules.of(
        min_days_between_mailings=0,
        recent_purchase_days=None,
        allowed_regions=[],
        allowed_postal_prefixes=None,
    )
    assert off == SuppressionRules()
    assert off.mailed_since(NOW) is None and off.ordered_since(NOW) is None
    assert RULES.mailed_since(NOW) == NOW - timedelta(days=30)


@pytest.mark.parametrize(
    ("region", "postal_code", "problem"),
    [
        ("CA", "94110", None),
        ("or", "97 201", None),
        ("NY", "94110", "outside the campaign's regions (NY; it mails CA, OR)"),
        (None, "94110", "outside the campaign's regions (no region; it mails CA, OR)"),
        ("CA", "90210", "outside the campaign's postal areas (90210; it mails 94, 972)"),
    ],
)
def test_an_address_must_be_in_the_campaigns_areas(
    region: str | None, postal_code: str | None, problem: str | None
) -> None:
    assert place_problem(RULES, region, postal_code) == problem


def test_a_person_another_campaign_mailed_recently_is_skipped_with_the_rule() -> None:
    decider = SyncDecider(
        1,
        rules=RULES,
        recently_mailed={"ann@example.com": ("Win-back", NOW - timedelta(days=3))},
    )
    assert decider.decide(ANN) == Decision(
        S.SKIPPED,
        "mailed by campaign 'Win-back' on 2026-11-27: the organization mails a person at "
        "most once every 30 days",
    )


def test_a_recent_buyer_is_skipped_by_address_too() -> None:
    decider = SyncDecider(
        1, rules=RULES, recent_buyers={"US|94110|12 main st": NOW - timedelta(days=2)}
    )
    assert decider.decide(ANN) == Decision(
        S.SKIPPED,
        "ordered on 2026-11-28: the organization does not mail a buyer for 14 days after an order",
    )


def test_an_address_outside_the_areas_is_skipped_before_the_holdout() -> None:
    from decimal import Decimal

    decider = SyncDecider(1, rules=RULES, holdout_percentage=Decimal(100))
    outside = replace(ANN, region="NY", postal_code="10001")
    assert decider.decide(outside) == Decision(
        S.SKIPPED, "outside the campaign's regions (NY; it mails CA, OR)"
    )
    # inside, the same person would be held out
    assert (
        decider.decide(
            replace(ANN, profile_id="p2", email_key="b@example.com", address_key="k2")
        ).status
        is S.HOLDOUT
    )


def test_a_person_waiting_for_an_address_is_judged_on_place_later() -> None:
    waiting = replace(ANN, has_address=False, region=None, postal_code=None)
    assert SyncDecider(1, rules=RULES).decide(waiting) == Decision(S.ADDRESS_ENRICHABLE)


def test_the_blocklist_comes_first() -> None:
    decider = SyncDecider(
        1,
        rules=RULES,
        blocked_emails=frozenset({"ann@example.com"}),
        recent_buyers={"ann@example.com": NOW},
    )
    assert decider.decide(ANN) == Decision(S.BLACKLISTED, "email address is on the blocklist")
