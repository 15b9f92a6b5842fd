"""Concurrent claimers take every recipient exactly once (SPEC §2)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.recipients import RecipientStatus

S = RecipientStatus


def _claim_until_empty(
    db_url: str,
    batch_size: int,
    results: list[list[int]],
    errors: list[BaseException],
    start: threading.Barrier,
) -> None:
    taken: list[int] = []
    try:
        start.wait()
        while True:
            with unit_of_work(db_url) as session:
                claim = RecipientGateway(session).claim_batch(
                    S.PENDING, S.PROOFING_STAGED, batch_size
                )
            if not claim.ids:
                break
            taken.extend(claim.ids)
    except BaseException as exc:  # noqa: BLE001 - the test thread fails on it
        errors.append(exc)
    results.append(taken)


def _run_claimers(db_url: str, claimers: int, batch_size: int) -> list[list[int]]:
    results: list[list[int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(claimers)
    threads = [
        threading.Thread(
            target=_claim_until_empty, args=(db_url, batch_size, results, errors, start)
        )
        for _ in range(claimers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def _assert_exactly_once(results: list[list[int]], expected: list[int]) -> None:
    counts = Counter(i for taken in results for i in taken)
    duplicated = [i for i, n in counts.items() if n > 1]
    missed = set(expected) - set(counts)
    assert not duplicated, f"claimed more than once: {duplicated[:10]}"
    assert not missed, f"never claimed: {sorted(missed)[:10]}"
    assert sorted(counts) == sorted(expected)


@pytest.mark.postgres
def test_four_claimers_over_10000_pending_on_postgres(
    db_url, make_campaign, add_recipients
) -> None:
    _, campaign_id = make_campaign()
    ids = add_recipients(campaign_id, 10_000)
    results = _run_claimers(db_url, claimers=4, batch_size=50)
    _assert_exactly_once(results, ids)
    # Every claimer did real work: SKIP LOCKED lets them interleave instead of queueing.
    assert all(len(taken) > 0 for taken in results)
    with unit_of_work(db_url) as session:
        assert RecipientGateway(session).counts_by_status(campaign_id=campaign_id) == {
            S.PROOFING_STAGED: 10_000
        }


def test_four_claimers_on_this_database(db_url, make_campaign, add_recipients) -> None:
    _, campaign_id = make_campaign()
    ids = add_recipients(campaign_id, 2_000)
    results = _run_claimers(db_url, claimers=4, batch_size=25)
    _assert_exactly_once(results, ids)
