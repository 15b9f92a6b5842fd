"""The transition table against SPEC §2, edge by edge."""

from __future__ import annotations

import itertools

import pytest

from mail_pipeline.domain.recipients import (
    CLAIMED_STATES,
    RECOVERY_TARGET,
    RETRY_TARGET,
    TERMINAL_STATES,
    TRANSITIONS,
    IllegalTransition,
    RecipientStatus,
    can_transition,
    require_reason,
    require_transition,
)

S = RecipientStatus

#: The moves SPEC §2 draws.
SPEC_EDGES = {
    (S.ADDRESS_ENRICHABLE, S.ADDRESS_ENRICHING),
    (S.ADDRESS_ENRICHING, S.PENDING),
    (S.PENDING, S.PROOFING_STAGED),
    (S.PROOFING_STAGED, S.PROOFING),
    (S.PROOFING, S.PROOFED),
    (S.PROOFED, S.SENDING_STAGED),
    (S.SENDING_STAGED, S.SENDING),
    (S.SENDING, S.SENT),
    (S.SENT, S.RECEIVED),
    (S.PENDING, S.SKIPPED),
    (S.PENDING, S.HOLDOUT),
    (S.PENDING, S.BLACKLISTED),
    (S.PROOFING, S.ERROR),
    (S.SENDING, S.ERROR),
}
#: Moves the spec implies but does not draw (docs/state-machine.md says why each exists).
RECOVERY_AND_RETRY_EDGES = {
    (S.ADDRESS_ENRICHING, S.SKIPPED),  # enrichment found no address: terminal
    (S.ADDRESS_ENRICHING, S.ADDRESS_ENRICHABLE),  # the enrichment batch failed: try again
    (S.PROOFING_STAGED, S.PENDING),
    (S.PROOFING, S.PENDING),  # a dead proofing run
    (S.SENDING_STAGED, S.PROOFED),  # a dead mailing run, printer never asked
    (S.SENDING, S.SENDING_STAGED),  # a dead mailing run, after reconciliation
    (S.ERROR, S.PENDING),
    (S.ERROR, S.PROOFED),  # an operator retry
    (S.SENT, S.ERROR),  # the printer failed or cancelled the piece after accepting it
    # a re-sync re-decides a profile that was rejected at sync, from its fresh data
    (S.ERROR, S.ADDRESS_ENRICHABLE),
    (S.ERROR, S.SKIPPED),
    (S.ERROR, S.HOLDOUT),
    (S.ERROR, S.BLACKLISTED),
    # a campaign that ends (switch-off, completion sweep) skips what no run holds
    (S.ADDRESS_ENRICHABLE, S.SKIPPED),
    (S.PROOFED, S.SKIPPED),
    # held back before the printer was asked: a pause or a daily cap
    (S.SENDING, S.PROOFED),
    # suppressed right before the printer was asked
    (S.SENDING, S.SKIPPED),
}
ALLOWED = SPEC_EDGES | RECOVERY_AND_RETRY_EDGES


@pytest.mark.parametrize(("from_status", "to_status"), sorted(itertools.product(S, S)))
def test_every_pair_is_allowed_exactly_when_the_spec_says(
    from_status: RecipientStatus, to_status: RecipientStatus
) -> None:
    expected = (from_status, to_status) in ALLOWED
    assert can_transition(from_status, to_status) is expected
    if expected:
        require_transition(from_status, to_status)
    else:
        with pytest.raises(IllegalTransition, match=f"from {from_status} to {to_status}"):
            require_transition(from_status, to_status)


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(S)


def test_nothing_leaves_a_terminal_state_except_an_error_retry() -> None:
    for status in TERMINAL_STATES - {S.ERROR}:
        assert TRANSITIONS[status] == frozenset()


def test_every_claimed_state_has_an_allowed_way_back_for_recovery() -> None:
    # A claim whose run died must be resumable by the system itself (SPEC §2 "Nothing is lost").
    assert set(RECOVERY_TARGET) == CLAIMED_STATES
    for claimed, target in RECOVERY_TARGET.items():
        assert can_transition(claimed, target)
        assert target not in TERMINAL_STATES


def test_error_retry_targets_are_allowed() -> None:
    for failed_in, target in RETRY_TARGET.items():
        assert can_transition(failed_in, S.ERROR)
        assert can_transition(S.ERROR, target)


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_error_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(ValueError, match="human-readable reason"):
        require_reason(reason)


def test_reason_is_trimmed_and_bounded() -> None:
    assert require_reason("  printer refused the address  ") == "printer refused the address"
    assert len(require_reason("x" * 5000)) == 2000
