from __future__ import annotations

from decimal import Decimal

from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.domain.sync import (
    Decision,
    ProfileFacts,
    SyncDecider,
    holdout_bucket,
    in_holdout,
)

S = RecipientStatus


def facts(
    pid: str, email: str | None = None, address: str | None = None, has_address: bool = True
) -> ProfileFacts:
    return ProfileFacts(
        pid, email or f"{pid}@example.com", address or f"US|10001|{pid} st", has_address
    )


def test_a_plain_profile_with_an_address_is_pending() -> None:
    assert SyncDecider(1).decide(facts("p1")) == Decision(S.PENDING)


def test_no_address_goes_to_enrichment() -> None:
    decision = SyncDecider(1).decide(facts("p1", address="x", has_address=False))
    assert decision == Decision(S.ADDRESS_ENRICHABLE)


def test_resync_of_an_existing_recipient_creates_nothing() -> None:
    decider = SyncDecider(1)
    decider.know_existing([facts("p1")])
    assert decider.decide(facts("p1")) is None
    # ...and a new profile of the same person is a duplicate, not a new recipient
    assert decider.decide(facts("p2", email="p1@example.com")) == Decision(
        S.SKIPPED, "duplicate of profile p1 (same email)"
    )


def test_duplicates_within_one_segment_are_skipped_with_the_original_named() -> None:
    decider = SyncDecider(1)
    assert decider.decide(facts("a", address="US|1|same st")).status == S.PENDING
    assert decider.decide(facts("b", address="US|1|same st")) == Decision(
        S.SKIPPED, "duplicate of profile a (same address)"
    )


def test_blocklist_beats_holdout_and_names_what_matched() -> None:
    decider = SyncDecider(
        1,
        holdout_percentage=Decimal(100),
        blocked_emails=frozenset({"x@example.com"}),
        blocked_addresses=frozenset({"US|2|y st"}),
    )
    assert decider.decide(facts("x", email="x@example.com")) == Decision(
        S.BLACKLISTED, "email address is on the blocklist"
    )
    assert decider.decide(facts("y", address="US|2|y st")) == Decision(
        S.BLACKLISTED, "postal address is on the blocklist"
    )


def test_cross_campaign_exclusion_names_the_other_campaign() -> None:
    decider = SyncDecider(1, other_campaign_emails={"p1@example.com": "Win-back"})
    assert decider.decide(facts("p1")) == Decision(
        S.SKIPPED, "already a recipient of campaign 'Win-back'"
    )


def test_holdout_is_stable_and_close_to_the_percentage() -> None:
    ids = [f"profile-{i}" for i in range(10_000)]
    held = [pid for pid in ids if in_holdout(7, pid, Decimal(10))]
    assert 900 <= len(held) <= 1100
    assert held == [pid for pid in ids if in_holdout(7, pid, Decimal(10))]
    assert holdout_bucket(7, "a") != holdout_bucket(8, "a") or holdout_bucket(
        7, "b"
    ) != holdout_bucket(8, "b")
    decider = SyncDecider(7, holdout_percentage=Decimal(10))
    assert decider.decide(facts(held[0])) == Decision(S.HOLDOUT, "in the campaign's 10% holdout")


def test_send_cap_skips_past_the_cap_but_not_unmailable_people() -> None:
    decider = SyncDecider(1, remaining_cap=2, blocked_emails=frozenset({"z@example.com"}))
    statuses = [decider.decide(facts(p)).status for p in ("a", "b")]
    assert decider.decide(facts("z", email="z@example.com")).status == S.BLACKLISTED
    assert statuses == [S.PENDING, S.PENDING]
    assert decider.decide(facts("c")) == Decision(
        S.SKIPPED, "the campaign's total send cap is reached"
    )


def test_a_profile_that_cannot_be_mailed_is_an_error_with_its_reason() -> None:
    decider = SyncDecider(1, remaining_cap=1)
    bad = ProfileFacts(
        "p1", "p1@example.com", "US|1|p1 st", True, "US address is missing the state"
    )
    assert decider.decide(bad) == Decision(S.ERROR, "US address is missing the state")
    # it took no place under the cap
    assert decider.decide(facts("p2")) == Decision(S.PENDING)


def test_rules_that_data_cannot_change_come_before_the_problem() -> None:
    decider = SyncDecider(
        1, blocked_emails=frozenset({"b@example.com"}), other_campaign_emails={"o@x.io": "Other"}
    )
    decider.know_existing([facts("first", email="d@example.com")])
    problem = "no printer mails to FR"
    assert decider.decide(ProfileFacts("dup", "d@example.com", None, True, problem)).status == (
        S.SKIPPED
    )
    assert decider.decide(ProfileFacts("b", "b@example.com", None, True, problem)).status == (
        S.BLACKLISTED
    )
    assert decider.decide(ProfileFacts("o", "o@x.io", None, True, problem)).status == S.SKIPPED
    # ...and the problem comes before the holdout: fixed, it lands in its stable group
    held = SyncDecider(1, holdout_percentage=Decimal(100))
    assert held.decide(ProfileFacts("h", None, None, True, problem)).status == S.ERROR


def test_a_reopened_profile_is_decided_again_and_is_not_its_own_duplicate() -> None:
    decider = SyncDecider(1)
    decider.know_existing(
        [facts("p1", email="ann@example.com"), facts("p2", email="ann@example.com")],
        reopened={"p1"},
    )
    assert decider.decide(facts("p1", email="ann@example.com")) == Decision(S.PENDING)
    assert decider.decide(facts("p2", email="ann@example.com")) is None  # not reopened
    assert decider.decide(facts("p1")) is None  # decided once per sync
    assert decider.decide(facts("p3", email="ann@example.com")) == Decision(
        S.SKIPPED, "duplicate of profile p1 (same email)"
    )
